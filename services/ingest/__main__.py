"""``python -m services.ingest``: the ingest's composition root."""

from kairos.entry import serve
from services.ingest.service import run

serve(run)
