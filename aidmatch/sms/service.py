"""What an inbound SMS does: a command, a need, an offer of help, or a question back.

Every message is stored before anything else. A need or an offer that lacks something essential
(the place, what is needed) gets one short question; the conversation is remembered per phone, so
what was given is never asked again. Messages nobody could understand are kept as ``unparsed``
for the coordinators' triage queue and answered with a hint.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from aidmatch.categories import Category, label
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.enums import (
    OPEN_NEED_STATUSES,
    Language,
    MatchStatus,
    MessageDirection,
    MessageStatus,
    NeedStatus,
    OfferStatus,
    Source,
    Urgency,
)
from aidmatch.errors import (
    AidmatchError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TaskLimitError,
    TooManyRequestsError,
)
from aidmatch.helpers.models import Helper
from aidmatch.matches import proposals
from aidmatch.matches import service as matches_service
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.models import Match
from aidmatch.matches.pending import PENDING_MATCH_STATUSES
from aidmatch.messages import notices
from aidmatch.messages import service as messages_service
from aidmatch.messages.models import Message, SmsConversation
from aidmatch.needs import service as needs_service
from aidmatch.needs.models import Need
from aidmatch.needs.schemas import NeedIn
from aidmatch.offers import service as offers_service
from aidmatch.offers.models import Offer
from aidmatch.offers.schemas import OfferIn
from aidmatch.schemas import MAX_ROW_ID
from geo.errors import GeocodingError
from geo.geocoding import Geocoder, fold
from geo.sphere import haversine_km
from notifications.errors import InvalidPhoneError
from notifications.keywords import FIRST_NAMES
from notifications.parser import (
    URGENCY_RANK,
    ParsedSms,
    answers,
    category_cues,
    follow_up,
    intent_cues,
    merge,
    parse_sms,
    polite_only,
)
from notifications.phones import normalize_phone
from notifications.templates import need_received, sms_reply, state_word

_DEFAULT_OFFER_RADIUS_KM = 25.0


@dataclass(frozen=True, slots=True)
class Place:
    lat: float
    lon: float
    text: str | None


def normalize_sender(raw: str, region: str) -> str:
    """E.164 when the number parses, else exactly what the provider sent."""
    try:
        return normalize_phone(raw, default_region=region)
    except InvalidPhoneError:
        return raw.strip()[:32]


def _valid_number(phone: str) -> bool:
    """Whether ``phone`` (as ``normalize_sender`` kept it) is a number a need or offer can carry."""
    try:
        return normalize_phone(phone) == phone
    except InvalidPhoneError:
        return False


_PARSED_FIELDS = frozenset(f.name for f in dataclasses.fields(ParsedSms))


def _state(parsed: ParsedSms, *, asked: list[str], message_id: int) -> dict[str, Any]:
    """What the conversation holds: the request so far, the questions asked (each is asked once)
    and the message that was asked the last one (what the coordinators get if it stays unanswered)."""
    return dataclasses.asdict(parsed) | {"asked_before": asked, "message_id": message_id}


def _restore(state: dict[str, Any]) -> ParsedSms:
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in state.items() if k in _PARSED_FIELDS
    }
    return ParsedSms(**values)


# A message complete on its own (what and where) sent this long after our question is a request of
# its own, not the answer to it; sooner, it is read as the answer and adds to the request.
ANSWER_WITHIN = timedelta(minutes=30)

# A conversation left unanswered this long reaches the coordinators' triage queue (a critical or
# urgent one sooner); the phone may still finish it until ``settings.sms_conversation_hours``.
ABANDONED_AFTER = timedelta(hours=1)
ABANDONED_URGENT_AFTER = timedelta(minutes=15)


def abandoned_query(now: datetime) -> Select[tuple[Message]]:
    """The last message of each conversation left unanswered past ``ABANDONED_AFTER`` (critical or
    urgent: ``ABANDONED_URGENT_AFTER``) that still waits, neither made a need nor handled: a request
    nobody could finish, for triage. In no order and all of them, to count them or to order them
    with the rest of the triage queue."""
    message_id = SmsConversation.state["message_id"].as_integer()
    urgency = SmsConversation.state["urgency"].as_string()  # none: normal
    return (
        select(Message)
        .join(SmsConversation, message_id == Message.id)
        .where(
            or_(
                SmsConversation.updated_at < now - ABANDONED_AFTER,
                and_(SmsConversation.updated_at < now - ABANDONED_URGENT_AFTER, urgency != "normal"),
            ),
            Message.status == MessageStatus.parsed,
            Message.need_id.is_(None),
        )
    )


def release_to_triage(session: Session, message: Message, now: datetime) -> bool:
    """Make ``message`` an ordinary triage entry (``unparsed``) when it is the last message of an
    abandoned conversation (``abandoned_query``); the conversation ends. Whether it was one."""
    needs_service.lock_phones(session, [message.phone])
    conversation = session.get(SmsConversation, message.phone, populate_existing=True)
    if conversation is None or (conversation.state or {}).get("message_id") != message.id:
        return False
    if session.scalar(abandoned_query(now).where(Message.id == message.id).with_only_columns(Message.id)) is None:
        return False
    _to_triage(session, message.phone, conversation)
    return True


def _to_triage(session: Session, phone: str, conversation: SmsConversation) -> None:
    """The conversation ends; its last message waits in the triage queue with the whole text."""
    message_id = (conversation.state or {}).get("message_id")
    text = (conversation.state or {}).get("text")
    session.execute(delete(SmsConversation).where(SmsConversation.phone == phone))
    message = session.get(Message, message_id) if isinstance(message_id, int) else None
    if message is not None and message.status is MessageStatus.parsed and message.need_id is None:
        message.status = MessageStatus.unparsed
        message.parsed = {**(message.parsed or {}), "conversation": text, "abandoned": True}
        message.updated_at = utcnow()
    session.flush()


def _helper(session: Session, phone: str) -> Helper | None:
    return session.scalar(select(Helper).where(Helper.phone == phone))


def _language(session: Session, phone: str, parsed: ParsedSms, helper: Helper | None, message_id: int) -> str:
    """The reply's language: the message's own, but for a command the sender's known language (their
    helper row's, their newest need's, that of what they wrote before): «ok», «Stop» are said in
    Latin letters by Russian speakers too; a command in Cyrillic is Russian whoever sends it."""
    if parsed.intent != "command":
        return parsed.language
    if helper is not None:
        return helper.language.value
    if not parsed.text.strip()[:1].isascii():
        return parsed.language
    need = session.scalar(select(Need).where(Need.contact_phone == phone).order_by(Need.id.desc()).limit(1))
    if need is not None:
        return need.language.value
    earlier = session.scalars(
        select(Message)
        .where(Message.phone == phone, Message.direction == MessageDirection.inbound, Message.id < message_id)
        .order_by(Message.id.desc())
        .limit(5)
    )
    for m in earlier:  # JSON: read here, alike on both databases
        if isinstance(m.parsed, dict) and m.parsed.get("intent") not in (None, "command") and m.language:
            return m.language
    return parsed.language


def _locate(parsed: ParsedSms, geocoder: Geocoder, body: str) -> Place | None:
    if parsed.lat is not None and parsed.lon is not None:
        return Place(parsed.lat, parsed.lon, parsed.place_text)
    if parsed.place_text:
        try:
            hit = geocoder.geocode(parsed.place_text)
            return Place(hit.lat_deg, hit.lon_deg, parsed.place_text)
        except GeocodingError:
            pass
    find = getattr(geocoder, "find_in_text", None)
    if find is not None:
        found = find(body)
        if found is not None:
            # The settlement found in the text, not the words the geocoder could not place: they
            # go to the helper as the address.
            return Place(found.lat_deg, found.lon_deg, found.name)
    return None


# «Рязань нужна вода», "Tula needs food": the parser leaves a first word right before these out of
# the place, since it is mostly who needs it («Сыну нужен инсулин»); a settlement's name is the place.
_NEED_WORDS = frozenset({"нужна", "нужен", "нужно", "нужны", "надо", "need", "needs", "needed"})
_RELATIVES = frozenset({"мама", "папа", "mama", "papa", "mom", "dad"})
_FIRST_WORD = re.compile(r"\s*([^\W\d_]+(?:-[^\W\d_]+)*)[\s,]+([^\W\d_]+)")


def _leading_settlement(parsed: ParsedSms, body: str, geocoder: Geocoder) -> ParsedSms:
    """``parsed`` with its place when the text starts with a settlement's name, as written (the
    nominative: «Маме нужна скорая» is not the village Мама), followed by «нужна»/«need»."""
    if parsed.intent != "need" or parsed.has_place:
        return parsed
    m = _FIRST_WORD.match(body)
    if m is None or len(m.group(1)) < 3 or fold(m.group(2)) not in _NEED_WORDS:
        return parsed
    word = m.group(1)
    try:
        hit = geocoder.geocode(word)
    except GeocodingError:
        return parsed
    # A declined form or a near miss is who needs it, not where (a Latin spelling of a name may
    # differ from the gazetteer's in a letter: "Tula"); «Мама» is a village too, and mostly a mother.
    if hit.confidence < (0.85 if word.isascii() else 1.0) or fold(word) in _RELATIVES | FIRST_NAMES:
        return parsed
    if category_cues(word):
        return parsed  # «Палатка нужна»: what is needed, not the village Палатка
    missing = tuple(x for x in parsed.missing if x != "place")
    return dataclasses.replace(parsed, place_text=word, missing=missing)


def _names_a_settlement(body: str, geocoder: Geocoder) -> bool:
    """Whether a short text with no request or offer in it is, from its first word, a settlement's
    name the geocoder knows («Кошки», «Приютово Московская обл.»)."""
    bare = body.strip(" \t\r\n.,!?;:")
    if not 0 < len(bare) <= 80 or intent_cues(bare):
        return False
    try:
        hit = geocoder.geocode(bare)
    except GeocodingError:
        return False
    words = fold(bare).split()
    name = fold(hit.name)
    # The name itself, or a declined form of it («в Кошках»), leads the text.
    stem = name[: max(3, len(name) - 2)]
    if not any(word.startswith(stem) for word in words[:2]):
        return False
    # «вода, Рязань», «Москва, и еда»: the place and what is needed, not a place alone; a keyword
    # inside the name («приютово», «Хлебниково») is not what is needed, nor one that says where
    # («Рязань, у больницы», «в палатке») or names a street («Тула, Хлебозаводская 3»).
    rest = []
    for n, part in enumerate(re.split(r"[,;]", bare)):
        raws = part.split()
        for k, raw in enumerate(raws):
            word = fold(raw.strip(".!?:()«»"))
            if word in _PLACE_PREPOSITIONS:
                break  # the rest of this part says where
            street = (
                raw[:1].isupper()
                and (n, k) != (0, 0)
                and (word.endswith(_STREET_ENDINGS) or (k + 1 < len(raws) and raws[k + 1][:1].isdigit()))
            )
            if not word.startswith(stem) and not street:
                rest.append(word)
    return not category_cues(" ".join(rest))


# «у больницы», «в палатке», «возле школы», "near the hospital": what follows says where.
_STREET_ENDINGS = ("ая", "яя", "ой", "ий", "ый")
_PLACE_PREPOSITIONS = frozenset(
    {"у", "в", "во", "возле", "около", "рядом", "за", "под", "на", "near", "at", "in", "by", "behind", "next"}
)


def _adds_nothing(previous: ParsedSms, reply: ParsedSms, unfound: str | None = None) -> bool:
    """Whether ``reply`` is the request sent again («нужна вода» after «нужна вода» — «Где вы?»):
    of the same kind, nothing new in it, so no answer to the question (which is asked again) and
    no failed one either. A place it names is nothing new when it is the one given before:
    ``previous``'s own, or ``unfound``, the one the gazetteer could not find («нужна вода,
    Зажопинск» after «нужна вода, Зажопинск» — «Не нашли «Зажопинск»»)."""
    same_place = not reply.has_place or (
        reply.lat is None
        and reply.place_text is not None
        and fold(reply.place_text) in {fold(p) for p in (previous.place_text, unfound) if p}
    )
    return (
        reply.intent == previous.intent
        and set(reply.categories) <= set(previous.categories)
        and same_place
        and reply.quantity in (None, previous.quantity)
        and reply.radius_km in (None, previous.radius_km)
    )


def _says_nothing_new(previous: ParsedSms, reply: ParsedSms) -> bool:
    """Whether ``reply`` is no more urgent than ``previous`` and has no word it has not."""
    if URGENCY_RANK[reply.urgency] > URGENCY_RANK[previous.urgency]:
        return False
    said = set(fold(previous.text).split())
    return set(fold(reply.text).split()) <= said


class InboundResult:
    """The reply and what became of the message; ``language`` is the sender's, as the reply speaks
    it (None: the message's own)."""

    def __init__(self, reply: str, status: MessageStatus, parsed: ParsedSms | None, **links: int | None) -> None:
        self.reply = reply
        self.status = status
        self.parsed = parsed
        self.links = links
        self.language: str | None = None


_ALWAYS_ANSWERED = frozenset({"stop", "start", "help"})


def always_answered(body: str) -> bool:
    """Whether the text is STOP, START or HELP (in either language): never held back by a rate limit."""
    parsed = parse_sms(body)
    return parsed.intent == "command" and parsed.command in _ALWAYS_ANSWERED


def handle(
    *,
    session: Session,
    settings: Settings,
    live: LiveOfferIndex,
    geocoder: Geocoder,
    message: Message,
    now: datetime,
) -> InboundResult:
    """Act on a stored inbound message; the caller records the result and commits."""
    phone = message.phone
    # One message of a phone at a time: two at once would both miss the other's need or conversation.
    needs_service.lock_phones(session, [phone])
    parsed = parse_sms(message.body)
    helper = _helper(session, phone)
    if parsed.intent == "command" and _sentence_after_all(session, phone, helper, parsed):
        parsed = parse_sms(message.body, commands=False)
    language = _language(session, phone, parsed, helper, message.id)
    if parsed.intent == "command" and parsed.command is not None:
        result = _command(
            session=session, settings=settings, live=live, phone=phone, helper=helper, parsed=parsed, lang=language
        )
        # «YES 123», "STOP" from a Russian speaker: the word says nothing of the sender's language.
        result.language = language
        return result
    parsed = _leading_settlement(parsed, message.body, geocoder)
    conversation = session.get(SmsConversation, phone)
    if conversation is not None and conversation.updated_at < now - timedelta(hours=settings.sms_conversation_hours):
        _to_triage(session, phone, conversation)  # too old to go on; a coordinator sees what it said
        conversation = None
    progressed = resent = False
    if conversation is not None:
        previous = _restore(conversation.state)
        whole = parsed.intent in ("need", "offer") and bool(parsed.categories) and parsed.has_place
        if (
            whole
            and conversation.updated_at < now - ANSWER_WITHIN
            and set(previous.categories) - set(parsed.categories)
        ):
            # «нужны лекарства, Тула» hours after an unanswered «нужна вода»: a request of its own,
            # not the answer; the unfinished one goes to the coordinators rather than into this one.
            _to_triage(session, phone, conversation)
            conversation = None
    if conversation is not None:
        previous = _restore(conversation.state)
        if conversation.asked == "place" and not previous.has_place and _names_a_settlement(message.body, geocoder):
            # «Кошки», «приютово» in answer to «Где вы?»: a settlement, not a category.
            bare = message.body.strip(" \t\r\n.,!?;:")
            parsed = dataclasses.replace(parsed, intent="unknown", categories=(), place_text=bare, missing=())
        if parsed.intent == "unknown" and polite_only(message.body):
            # «спасибо» to our question: the conversation stays open, nothing is asked again
            return InboundResult(sms_reply("thanks_waiting", previous.language), MessageStatus.parsed, parsed)
        if answers(previous, parsed, conversation.asked):
            resent = _adds_nothing(previous, parsed, (conversation.state or {}).get("unfound"))
            # «СРОЧНО нужна вода, ребенку плохо» after «нужна вода»: asked again all the same, but
            # what it says more (the urgency, the child) stays with the request. Sent again with
            # the place not found, it is merged: the same place, not found again, is asked again.
            unchanged = resent and _says_nothing_new(previous, parsed) and previous.has_place >= parsed.has_place
            parsed = previous if unchanged else merge(previous, parsed)
            # «нужна еда» after «нужна вода» — «Где вы?»: a request of its own, not a failed answer
            progressed = bool(set(parsed.categories) - set(previous.categories))
            language = parsed.language
        else:  # a new request of the other kind: the unfinished one is dropped, this one stands alone
            session.delete(conversation)
            session.flush()
            conversation = None
    if parsed.intent == "withdrawn":
        # «Вода больше не нужна», «спасибо, воду привезли»: not a new request nor a repeat that
        # renews the old one; the unfinished conversation ends, and NO/DONE with a code close a need.
        if conversation is not None:
            session.delete(conversation)
            session.flush()
        return _withdrawn(session, phone, parsed, language)
    if parsed.intent not in ("need", "offer"):
        return InboundResult(
            sms_reply("unparsed", language) + sms_reply("help", language), MessageStatus.unparsed, parsed
        )
    if not _valid_number(phone):
        # A need or an offer is stored with the sender's number; one we cannot read as a phone
        # number (a short code, an alphanumeric sender) goes to the coordinators instead.
        return InboundResult(sms_reply("number_not_accepted", language), MessageStatus.unparsed, parsed)
    if parsed.intent == "need" and "place" in parsed.missing and conversation is None:
        # «и еда тоже» right after «нужна вода, Белоомут»: the place was given already.
        recent = _recent_need(session, phone, now)
        if recent is not None:
            missing = tuple(m for m in parsed.missing if m != "place")
            parsed = dataclasses.replace(
                parsed, lat=recent.lat, lon=recent.lon, place_text=recent.address, missing=missing
            )
    place = None if "place" in parsed.missing else _locate(parsed, geocoder, message.body)
    question = follow_up(parsed, language)
    key = parsed.missing[0] if parsed.missing else ""
    # The place last given and not found: the same place sent again is a resend, not an answer.
    unfound = (conversation.state or {}).get("unfound") if conversation else None
    if question is None and place is None:
        where = parsed.place_text or message.body.strip()[:40]
        question = sms_reply("place_not_found", language, place=where)
        unfound = parsed.place_text
        parsed = dataclasses.replace(parsed, place_text=None, lat=None, lon=None, missing=("place",))
        key = "place_not_found"
    asked_before: list[str] = list((conversation.state or {}).get("asked_before", [])) if conversation else []
    # The request sent again is asked again once; sent a third time, it goes to a coordinator.
    resends = int((conversation.state or {}).get("resends", 0)) if conversation else 0
    if question is not None and key in asked_before and not progressed and not (resent and resends == 0):
        # Never the same question twice. What to do is known where to: something (``other``), the
        # whole text saying what. Not where: the messages go to a coordinator.
        if key == "category" and place is not None:
            question = None
            parsed = dataclasses.replace(parsed, missing=())
        else:
            assert conversation is not None
            conversation.state = _state(parsed, asked=asked_before, message_id=message.id)
            _to_triage(session, phone, conversation)
            return InboundResult(sms_reply("place_to_coordinators", language), MessageStatus.unparsed, parsed)
    if question is not None:
        asked = asked_before if key in asked_before else [*asked_before, key]  # a resend: asked again
        state = _state(parsed, asked=asked, message_id=message.id) | {"resends": resends + resent, "unfound": unfound}
        if conversation is None:
            session.add(SmsConversation(phone=phone, state=state, asked=parsed.missing[0], updated_at=now))
        else:
            conversation.state = state
            conversation.asked = parsed.missing[0]
            # Sending the request again does not put off its reaching a coordinator (the column is
            # written as it was, or its ``onupdate`` would set it to now).
            conversation.updated_at = conversation.updated_at if resent else now
            flag_modified(conversation, "updated_at")
        session.flush()
        return InboundResult(question, MessageStatus.parsed, parsed)
    assert place is not None
    session.execute(delete(SmsConversation).where(SmsConversation.phone == phone))
    if parsed.intent == "offer":
        return _offer(session=session, phone=phone, parsed=parsed, place=place, geocoder=geocoder, lang=language)
    return _need(
        session=session,
        settings=settings,
        live=live,
        geocoder=geocoder,
        phone=phone,
        parsed=parsed,
        place=place,
        message=message,
        now=now,
        lang=language,
    )


def _withdrawn(session: Session, phone: str, parsed: ParsedSms, lang: str) -> InboundResult:
    """The reply to «no longer needed»: how to close the sender's request (of what the text names,
    if any is), since a free text is not read as the NO or DONE that closes one."""
    mine = session.scalars(
        select(Need)
        .where(Need.contact_phone == phone, Need.status.in_((*OPEN_NEED_STATUSES, NeedStatus.assigned)))
        .order_by(Need.id)
    ).all()
    named = [n for n in mine if n.category.value in parsed.categories]
    needs = named or mine
    if not needs:
        return InboundResult(sms_reply("withdraw_none", lang), MessageStatus.parsed, parsed)
    if len(needs) > 1:
        codes = ", ".join(f"{n.code} ({label(n.category, lang)})" for n in needs[:5])
        return InboundResult(sms_reply("withdraw_which", lang, codes=codes), MessageStatus.parsed, parsed)
    (need,) = needs
    reply = sms_reply("withdraw_one", lang, code=need.code, what=label(need.category, lang))
    return InboundResult(reply, MessageStatus.parsed, parsed, need_id=need.id)


def _need(
    *,
    session: Session,
    settings: Settings,
    live: LiveOfferIndex,
    geocoder: Geocoder,
    phone: str,
    parsed: ParsedSms,
    place: Place,
    message: Message,
    now: datetime,
    lang: str,
) -> InboundResult:
    """One need per category named, each with its own code; helpers are asked at once."""
    codes, whats, first = [], [], None
    for code in parsed.categories or ("other",):
        need_in = NeedIn(
            category=Category(code),
            quantity=max(1, min(parsed.quantity or 1, 10_000)),
            urgency=Urgency(parsed.urgency),
            lat=place.lat,
            lon=place.lon,
            address=(place.text or None) and place.text[:500],
            # After a follow-up question: the first message and the answers, not just the last one.
            description=parsed.text[: settings.max_description_chars],
            contact_phone=phone,
            language=Language(lang),
        )
        try:
            need, merged = needs_service.create_or_merge(
                session=session, need_in=need_in, settings=settings, geocoder=geocoder, source=Source.sms
            )
        except TooManyRequestsError:
            # The phone's open-needs limit: said plainly, with what was stored before it was reached.
            refused = sms_reply("too_many_open", lang, count=settings.max_open_needs_per_phone)
            if first is None:
                return InboundResult(refused, MessageStatus.parsed, parsed)
            reply = need_received(language=lang, code=", ".join(codes), what=", ".join(whats))
            return InboundResult(f"{reply} {refused}", MessageStatus.parsed, parsed, need_id=first.id)
        if merged:  # a repeat («ещё нужна вода») bumped the open need and kept the message
            proposals.propose_still_needed(session=session, need=need, live=live, now=now)
        else:
            proposals.propose_for_need(session=session, need=need, live=live, settings=settings, now=now)
        codes.append(need.code)
        whats.append(label(need.category, lang))
        first = first or need
    assert first is not None
    reply = need_received(language=lang, code=", ".join(codes), what=", ".join(whats))
    return InboundResult(reply, MessageStatus.parsed, parsed, need_id=first.id)


def _offer(
    *, session: Session, phone: str, parsed: ParsedSms, place: Place, geocoder: Geocoder, lang: str
) -> InboundResult:
    radius = parsed.radius_km if parsed.radius_km and 0 < parsed.radius_km <= 500 else _DEFAULT_OFFER_RADIUS_KM
    offer_in = OfferIn(
        categories=[Category(c) for c in parsed.categories] or [Category.other],
        capacity=max(1, min(parsed.quantity or 1, 10_000)),
        radius_km=radius,
        lat=place.lat,
        lon=place.lon,
        address=(place.text or None) and place.text[:500],
        description=parsed.text[:2000],
        phone=phone,
        language=Language(lang),
    )
    offer = _repeated_offer(session, offer_in)
    if offer is None:
        # From the phone itself: its helper's, whoever registered it.
        offer, _ = offers_service.create(
            session=session, offer_in=offer_in, geocoder=geocoder, vouched=True, by_sms=True
        )
    else:  # the same offer again (a resend when no answer came): bumped, not a second offer
        offer.capacity = max(offer.capacity, offer_in.capacity)
        offer.radius_km = max(offer.radius_km, offer_in.radius_km)
        offer.updated_at = utcnow()
        session.flush()
    what = ", ".join(label(c, lang) for c in offer.categories)
    return InboundResult(
        sms_reply("offer_saved", lang, what=what, km=radius), MessageStatus.parsed, parsed, helper_id=offer.helper_id
    )


def _repeated_offer(session: Session, offer_in: OfferIn) -> Offer | None:
    """The phone's active offer of the same categories within 500 m of this one (a need's repeat
    radius), if any."""
    assert offer_in.lat is not None
    assert offer_in.lon is not None
    wanted = set(offer_in.categories)
    for offer in session.scalars(
        select(Offer)
        .join(Helper, Helper.id == Offer.helper_id)
        .where(Helper.phone == offer_in.phone, Offer.status == OfferStatus.active)
        .order_by(Offer.id)
    ):
        near = (
            float(haversine_km(offer.lat, offer.lon, offer_in.lat, offer_in.lon)) <= needs_service.DUPLICATE_RADIUS_KM
        )
        if near and set(offer.categories) == wanted:
            return offer
    return None


def _command(
    *,
    session: Session,
    settings: Settings,
    live: LiveOfferIndex,
    phone: str,
    helper: Helper | None,
    parsed: ParsedSms,
    lang: str,
) -> InboundResult:
    command, arg = parsed.command, parsed.argument
    ok = MessageStatus.parsed
    if command == "help":
        return InboundResult(sms_reply("help", lang), ok, parsed)
    if command in ("stop", "start"):
        messages_service.set_consent(session, phone, consent=command == "start")
        return InboundResult(sms_reply(command, lang), ok, parsed, helper_id=helper.id if helper else None)
    if command == "status":
        return InboundResult(_status(session, phone, helper, lang), ok, parsed)
    # YES / NO / DONE: a task number (helpers) or a need code (the need's author). A code may be
    # all digits (8 of the code alphabet's 18 characters are): the sender's own need comes first.
    own = _own_need(session, phone, arg) if arg is not None else None
    if arg is not None and (own is not None or not arg.isdigit()):
        return _need_command(
            session=session,
            settings=settings,
            live=live,
            need=own,
            command=command,
            code=arg,
            parsed=parsed,
            lang=lang,
        )
    match = _helper_match(session, helper, arg, command) if helper is not None else None
    if arg is None and match is None:
        # A bare «ДА» / "YES" (NO, DONE) to «Заявка … ещё нужна?»: the sender's need that was asked.
        latest = _asked_to_reconfirm(session, phone)
        if len(latest) > 1:
            codes = ", ".join(n.code for n in latest)
            return InboundResult(sms_reply("which_request", lang, codes=codes), ok, parsed)
        if latest:
            (asked,) = latest
            return _need_command(
                session=session,
                settings=settings,
                live=live,
                need=asked,
                command=command,
                code=asked.code,
                parsed=parsed,
                lang=lang,
            )
    if helper is None:
        key = "nothing_pending" if arg is None else "not_yours"
        return InboundResult(sms_reply(key, lang, id=arg or ""), ok, parsed)
    if match is None:
        key = "which_task" if arg is None else "not_yours"
        return InboundResult(sms_reply(key, lang, id=arg or ""), ok, parsed, helper_id=helper.id)
    links = {"helper_id": helper.id, "match_id": match.id, "need_id": match.need_id}
    try:
        if command == "yes":
            accepted = matches_service.accept(session=session, match_id=match.id)
            return InboundResult(
                notices.accepted(session=session, match=accepted, helper_by_sms=True), ok, parsed, **links
            )
        if command == "no":
            matches_service.decline(session=session, match_id=match.id, live=live, settings=settings)
            return InboundResult(sms_reply("declined", lang, id=match.id), ok, parsed, **links)
        matches_service.complete(session=session, match_id=match.id)
        return InboundResult(sms_reply("done", lang, id=match.id), ok, parsed, **links)
    except TaskLimitError as exc:  # not taken by anyone: theirs to take once one of theirs is done
        return InboundResult(sms_reply("at_limit", lang, id=match.id, limit=exc.limit), ok, parsed, **links)
    except (ConflictError, NotFoundError):
        return InboundResult(sms_reply("taken", lang, id=match.id), ok, parsed, **links)


def _helper_match(session: Session, helper: Helper, arg: str | None, command: str | None) -> Match | None:
    """The helper's match named by ``arg``, or their only one open for the command when no number is given."""
    mine = select(Match).join(Offer, Offer.id == Match.offer_id).where(Offer.helper_id == helper.id)
    if arg is not None:
        number = int(arg)
        # «ДА 89161234567»: beyond any id (PostgreSQL would refuse it against an INTEGER), no task
        return session.scalar(mine.where(Match.id == number)) if 0 < number <= MAX_ROW_ID else None
    wanted = (MatchStatus.accepted,) if command == "done" else PENDING_MATCH_STATUSES
    open_ones = session.scalars(mine.where(Match.status.in_(wanted)).limit(2)).all()
    return open_ones[0] if len(open_ones) == 1 else None


# A need sent without a place within this long after the phone's last need takes that need's place.
SAME_PLACE_WITHIN = timedelta(hours=1)


def _recent_need(session: Session, phone: str, now: datetime) -> Need | None:
    """The phone's newest open need if it came within ``SAME_PLACE_WITHIN``."""
    return session.scalar(
        select(Need)
        .where(
            Need.contact_phone == phone,
            Need.status.in_(OPEN_NEED_STATUSES),
            Need.created_at >= now - SAME_PLACE_WITHIN,
        )
        .order_by(Need.created_at.desc(), Need.id.desc())
        .limit(1)
    )


def _asked_to_reconfirm(session: Session, phone: str) -> list[Need]:
    """The sender's needs asked «still needed?» (or, taken by helpers, «has help arrived?») most
    recently and not answered yet: one when a bare «ДА» / "YES" (NO, DONE) answers it; several
    asked in the same pass (then the reply must name a code); none when nothing was asked. A
    question left unanswered does not hide a later one: the latest is the one being answered."""
    asked = session.scalars(
        select(Need)
        .where(
            Need.contact_phone == phone,
            Need.status.in_((*OPEN_NEED_STATUSES, NeedStatus.assigned)),
            Need.reconfirm_requested_at.is_not(None),
        )
        .order_by(Need.reconfirm_requested_at.desc(), Need.id)
        .limit(5)
    ).all()
    return [n for n in asked if n.reconfirm_requested_at == asked[0].reconfirm_requested_at]


def _own_need(session: Session, phone: str, code: str) -> Need | None:
    """The need with this code when ``phone`` posted it."""
    try:
        need = needs_service.get_by_code(session=session, code=code)
    except (NotFoundError, InvalidInputError):
        return None
    return need if need.contact_phone == phone else None


def _sentence_after_all(session: Session, phone: str, helper: Helper | None, parsed: ParsedSms) -> bool:
    """Whether a message read as a command is a need or offer in words after all: its «code» is
    a word folded into code letters («Нет сахара…» → CAXAPA) that names none of the sender's needs,
    and the rest of the text reads as a request; or its number names none of the sender's needs
    and tasks and the rest is a whole request, with its place («Нет 3 недели воды, Рязань»)."""
    arg = parsed.argument
    if arg is None or _own_need(session, phone, arg) is not None:
        return False
    sentence = parse_sms(parsed.text, commands=False)
    if not arg.isdigit():
        return sentence.intent in ("need", "offer")
    if helper is not None and _helper_match(session, helper, arg, parsed.command) is not None:
        return False
    return sentence.intent in ("need", "offer") and sentence.has_place and bool(sentence.categories)


def _need_command(
    *,
    session: Session,
    settings: Settings,
    live: LiveOfferIndex,
    need: Need | None,
    command: str | None,
    code: str,
    parsed: ParsedSms,
    lang: str,
) -> InboundResult:
    """YES/NO/DONE from a need's author; ``need`` is the sender's own need named by ``code`` (or None)."""
    if need is None:
        return InboundResult(sms_reply("not_yours", lang, id=code), MessageStatus.parsed, parsed)
    needs_service.lock(session, need)  # what it is now: a helper may have taken it since it was read
    if command == "yes":
        try:
            needs_service.reconfirm(session=session, need=need, settings=settings)
        except AidmatchError:
            return InboundResult(sms_reply("taken", lang, id=code), MessageStatus.parsed, parsed, need_id=need.id)
        proposals.propose_still_needed(session=session, need=need, live=live, now=utcnow(), reason="still needed")
        return InboundResult(
            sms_reply("confirmed", lang, code=need.code), MessageStatus.parsed, parsed, need_id=need.id
        )
    if command == "no" and needs_service.asked_if_help_came(need):
        # NO to «has help arrived?»: not yet. The helpers stay on it; asked again in a while.
        needs_service.reconfirm(session=session, need=need, settings=settings)
        reply = sms_reply("still_waiting", lang, code=need.code)
        return InboundResult(reply, MessageStatus.parsed, parsed, need_id=need.id)
    # NO or DONE from the author: the need no longer stands.
    try:
        needs_service.close(session=session, need=need, fulfilled=command == "done")
    except ConflictError:
        reply = sms_reply("already_closed", lang, code=need.code)
        return InboundResult(reply, MessageStatus.parsed, parsed, need_id=need.id)
    return InboundResult(sms_reply("closed", lang, code=need.code), MessageStatus.parsed, parsed, need_id=need.id)


def _status(session: Session, phone: str, helper: Helper | None, lang: str) -> str:
    needs = session.scalars(
        select(Need)
        .where(Need.contact_phone == phone, Need.status.in_((*OPEN_NEED_STATUSES, NeedStatus.assigned)))
        .order_by(Need.id)
    ).all()
    parts = []
    if needs:
        items = ", ".join(f"{n.code} {state_word(n.status.value, lang)}" for n in needs[:5])
        parts.append(sms_reply("status_needs", lang, items=items))
    if helper is not None:
        tasks = session.scalars(
            select(Match)
            .join(Offer, Offer.id == Match.offer_id)
            .where(Offer.helper_id == helper.id, Match.status.in_(proposals.OPEN_TASK_STATUSES))
            .order_by(Match.id)
        ).all()
        if tasks:
            parts.append(
                sms_reply(
                    "status_tasks",
                    lang,
                    items=", ".join(f"{m.id} {state_word(m.status.value, lang)}" for m in tasks[:5]),
                )
            )
    return " ".join(parts) or sms_reply("status_none", lang)
