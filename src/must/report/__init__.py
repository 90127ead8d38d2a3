"""``must report``: the paper's tables, training curves and Figure 4 for one run."""

from must.report.build import Report, write_report
from must.report.results import collect_results
from must.report.student import LoadedModel, load_student, load_transfer_model

__all__ = ["LoadedModel", "Report", "collect_results", "load_student", "load_transfer_model", "write_report"]
