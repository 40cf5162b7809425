"""``python -m services.timer``: the timer's composition root (a faust worker)."""

from kairos.entry import prepare
from services.timer.app import run

run(*prepare("timer"))
