"""Two STOPs for one phone at once both succeed (one opt-out row, no IntegrityError)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.messages import service as messages_service
from aidmatch.messages.models import SmsOptOut


def test_two_stops_at_once_both_succeed(sessions: sessionmaker[Session]) -> None:
    phone = "+79120009999"
    a, b = sessions(), sessions()
    errors: list[BaseException] = []
    try:
        messages_service.set_consent(a, phone, consent=False)  # inserted, not committed yet

        def other() -> None:
            try:
                messages_service.set_consent(b, phone, consent=False)  # waits on the key (PostgreSQL)
                b.commit()
            except BaseException as exc:  # the test reports whatever it was
                errors.append(exc)
                b.rollback()

        if a.get_bind().dialect.name == "postgresql":
            thread = threading.Thread(target=other)
            thread.start()
            time.sleep(0.5)
            a.commit()
            thread.join(10)
        else:  # one writer at a time: the second STOP comes after the first is committed
            a.commit()
            other()
        assert errors == []
        assert a.scalar(select(func.count()).select_from(SmsOptOut).where(SmsOptOut.phone == phone)) == 1
        # START clears it, and STOP again after START stores it again
        messages_service.set_consent(a, phone, consent=True)
        messages_service.set_consent(a, phone, consent=False)
        messages_service.set_consent(a, phone, consent=False)
        assert a.scalar(select(func.count()).select_from(SmsOptOut).where(SmsOptOut.phone == phone)) == 1
    finally:
        a.rollback()
        a.execute(delete(SmsOptOut).where(SmsOptOut.phone == phone))
        a.commit()
        a.close()
        b.close()
