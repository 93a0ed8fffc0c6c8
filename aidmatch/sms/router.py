"""Twilio webhooks: ``POST /sms/inbound`` (a message came in) and ``POST /sms/status`` (delivery)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.twiml.messaging_response import MessagingResponse

from aidmatch.audit.service import act_as
from aidmatch.config import Settings
from aidmatch.database import SessionDep, utcnow
from aidmatch.deps import GeocoderDep, LiveIndexDep, SettingsDep
from aidmatch.enums import MessageDirection, MessageStatus
from aidmatch.errors import ForbiddenError, TooManyRequestsError
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message
from aidmatch.sms import service
from aidmatch.sms.signature import public_request_url, valid_signature
from geo.geocoding import Geocoder
from notifications.parser import parse_sms
from notifications.segments import fit
from notifications.templates import sms_reply

log = logging.getLogger("aidmatch.sms")
router = APIRouter(prefix="/sms", tags=["sms"])


async def signed_form(request: Request) -> list[tuple[str, str]]:
    """The form Twilio posted, once its ``X-Twilio-Signature`` checks out (else 403, nothing stored)."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    params = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    url = public_request_url(settings.public_url, request.url.path, request.url.query)
    token = settings.twilio_auth_token.get_secret_value()
    if not token:
        raise ForbiddenError("SMS webhooks are off: set AIDMATCH_TWILIO_AUTH_TOKEN to check Twilio's signatures")
    if not valid_signature(
        auth_token=token,
        url=url,
        params=params,
        signature=request.headers.get("X-Twilio-Signature"),
        settings_header=request.headers.get("X-Twilio-Webhooks-Signature-Settings"),
    ):
        raise ForbiddenError("the request is not signed by Twilio for this URL")
    return params


SignedForm = Annotated[list[tuple[str, str]], Depends(signed_form)]


def _twiml(text: str | None) -> Response:
    twiml = MessagingResponse()
    if text:
        twiml.message(text)
    return Response(content=str(twiml), media_type="application/xml")


@router.post("/inbound", response_class=Response, responses={200: {"content": {"application/xml": {}}}})
def inbound(
    request: Request,
    form: SignedForm,
    session: SessionDep,
    settings: SettingsDep,
    live: LiveIndexDep,
    geocoder: GeocoderDep,
) -> Response:
    """Twilio's incoming-message webhook: store, understand, act, answer with TwiML.

    A repeated ``MessageSid`` (Twilio retries) is answered with the first reply and changes nothing.
    A retry that arrives while the first delivery is still being handled waits for its reply (up to
    ``RETRY_WAIT_S``), else is told the message is being handled; if the first delivery died before
    it was handled (still ``received`` after ``STALE_RECEIVED_S``), the retry handles it.
    """
    # Checked as signed; kept as storable (PostgreSQL refuses NUL in text; a sid longer than its
    # column is none of Twilio's, so the message is kept without it rather than refused).
    fields = {k: v.replace("\x00", "") for k, v in form}
    sid = fields.get("MessageSid") or fields.get("SmsSid")
    if sid is not None and len(sid) > MAX_SID_CHARS:
        log.warning("inbound SMS with a %d-character MessageSid: kept without it", len(sid))
        sid = None
    if sid:
        earlier = session.scalar(select(Message).where(Message.provider_sid == sid))
        if earlier is not None:
            stale = earlier.created_at <= utcnow() - timedelta(seconds=STALE_RECEIVED_S)
            if _unhandled(earlier) and stale:
                log.warning("inbound SMS %s was never handled (its delivery died); handling it now", earlier.id)
                return _act(request, session, settings, live, geocoder, earlier)
            deadline = time.monotonic() + RETRY_WAIT_S
            while _unhandled(earlier) and time.monotonic() < deadline:
                time.sleep(0.2)
                session.refresh(earlier)
            if _unhandled(earlier):
                return _twiml(sms_reply("in_progress", parse_sms(earlier.body).language))
            return _twiml((earlier.parsed or {}).get("reply"))
    now = utcnow()
    phone = service.normalize_sender(fields.get("From", ""), settings.default_region)
    message = messages_service.store_inbound(
        session=session, phone=phone, body=fields.get("Body", "")[:5000], sid=sid, now=now
    )
    session.commit()  # the raw message is kept whatever happens next
    opt = fields.get("OptOutType", "").upper()
    if opt in ("STOP", "START"):
        # Twilio's Advanced Opt-Out recognised the text as an opt-out (or back in) keyword, maybe
        # one of its own we do not know: it blocks (or unblocks) the phone itself, so we follow.
        messages_service.set_consent(session, phone, consent=opt == "START")
        session.commit()
    return _act(request, session, settings, live, geocoder, message)


MAX_SID_CHARS = 64  # ``messages.provider_sid``; Twilio's are 34
# A retry of a message still being handled waits this long for its reply; a message still
# ``received`` this long after it came was left by a delivery that died (handling takes seconds).
RETRY_WAIT_S = 10.0
STALE_RECEIVED_S = 60.0


def _unhandled(message: Message) -> bool:
    """Stored and not yet acted on (a message held back by the phone's rate limit was acted on)."""
    return message.status is MessageStatus.received and message.parsed is None


def _act(
    request: Request,
    session: Session,
    settings: Settings,
    live: LiveOfferIndex,
    geocoder: Geocoder,
    message: Message,
) -> Response:
    """Act on a stored inbound message and answer it (see ``inbound``)."""
    now = utcnow()
    phone = message.phone
    act_as(session, f"sms:{phone}")
    try:
        # STOP, START and HELP are always acted on: an opt-out must never be lost to the limit.
        if not service.always_answered(message.body):
            request.app.state.sms_limiter.check(phone, "messages from this phone")
    except TooManyRequestsError:
        # Not acted on, and not lost: it waits in the coordinators' triage queue, one per phone (a
        # flood would bury everyone else's): while one of the phone's messages waits there, the
        # next stay ``received``, counted beside it, and in the SMS log.
        waiting = messages_service.waiting_in_triage(session, phone, other_than=message.id)
        message.status = MessageStatus.received if waiting else MessageStatus.unparsed
        message.parsed = {"rate_limited": True}
        message.updated_at = utcnow()
        session.commit()
        raise
    try:
        result = service.handle(
            session=session, settings=settings, live=live, geocoder=geocoder, message=message, now=now
        )
    except Exception:
        session.rollback()
        log.exception("inbound SMS %s could not be handled", message.id)
        message = session.get(Message, message.id) or message
        message.status = MessageStatus.unparsed
        lang = parse_sms(message.body).language  # the sender's language, as any other reply
        message.parsed = {"reply": sms_reply("unparsed", lang) + sms_reply("help", lang), "error": "internal"}
        session.commit()
        return _twiml(message.parsed["reply"])
    message.status = result.status
    message.language = result.language or (result.parsed.language if result.parsed else None)
    # The answer goes back as an SMS too: kept within the segments every outgoing SMS may take.
    reply = fit(result.reply, settings.sms_max_segments)
    parsed: dict[str, Any] = {"reply": reply}
    if result.parsed is not None:
        parsed |= {
            "intent": result.parsed.intent,
            "command": result.parsed.command,
            "categories": list(result.parsed.categories),
            "urgency": result.parsed.urgency,
            "place": result.parsed.place_text,
            "missing": list(result.parsed.missing),
        }
        if result.parsed.text != message.body:  # an answer: the whole conversation, for whoever reads it
            parsed["conversation"] = result.parsed.text
    message.parsed = parsed
    message.need_id = result.links.get("need_id")
    message.match_id = result.links.get("match_id")
    message.helper_id = result.links.get("helper_id")
    message.updated_at = utcnow()
    session.commit()
    return _twiml(reply)


@router.post("/status", status_code=204, response_class=Response)
def delivery_status(form: SignedForm, session: SessionDep) -> Response:
    """Twilio's status callback for a message we sent: delivered, undelivered, failed…

    A callback can come before the message's provider id is stored (it overtook the drain that
    sent it, or the send's answer was lost and the outbox stores the id when it reconciles): it is
    kept and applied then (``messages_service.apply_early_report``), without holding a worker.
    """
    fields = dict(form)
    sid = fields.get("MessageSid") or fields.get("SmsSid")
    status = fields.get("MessageStatus", "")
    if not sid or len(sid) > MAX_SID_CHARS:  # ``provider_sid == None`` would match a message not sent yet
        log.info("status callback without a usable MessageSid (%s)", status)
        return Response(status_code=204)
    stmt = select(Message).where(Message.provider_sid == sid, Message.direction == MessageDirection.outbound)
    message = session.scalar(stmt.with_for_update())
    if message is None:
        messages_service.keep_early_report(session, sid, status, fields.get("ErrorCode"))
        session.commit()
        # The drain may have stored the id meanwhile, between the read and this report's commit.
        message = session.scalar(stmt.with_for_update())
        if message is not None:
            messages_service.apply_early_report(session, message)
        session.commit()
        return Response(status_code=204)
    if messages_service.apply_delivery(message, status, fields.get("ErrorCode")):
        session.commit()
    return Response(status_code=204)
