"""Finding the wrong labels of a dataset with a small trusted subset.

* ``find_label_issues`` (``find.py``): the flagged rows and cleanlab's columns (``LabelIssues``), from a
  scorer (neighbour agreement with trust, or the streamed FBR score) and a flagging rule (a noise model
  fitted with the clean subset, a margin on the neighbours' vote, a false-discovery-rate target from the
  clean subset, or the estimated noise rate); with an audit (``clean_idx`` with ``clean_labels``: the
  verified labels of rows whose given labels stay in ``labels``) also the noise rate the audit implies
  and its interval (``audit.py``).
* ``score_dataset`` (``stream.py``): every row's FBR score against the clean subset, streamed in chunks
  from arrays or memory-mapped files, memory bounded independently of N but for 20 bytes a row.
* ``write_report`` (``report.py``): one self-contained HTML page of what was found.
* ``write_ranked_csv``: the rows ranked from most to least suspicious.
"""
from .find import SCORERS, find_label_issues, knn_memory_bytes
from .flag import MODEL_FLAGS
from .report import write_report
from .result import LabelIssues
from .options import Execution, Similarity
from .stream import ScoreResult, load_array, memory_bound_bytes, score_dataset, write_ranked_csv

__all__ = ["find_label_issues", "write_report", "SCORERS", "LabelIssues", "score_dataset", "Similarity", "Execution", "ScoreResult",
           "write_ranked_csv", "load_array", "memory_bound_bytes", "knn_memory_bytes", "MODEL_FLAGS"]
