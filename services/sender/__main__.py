"""``python -m services.sender``: the sender's composition root."""

from kairos.entry import serve
from services.sender.service import run

serve(run)
