"""Keyword tables of the SMS parser (``notifications.parser``): data only, no logic.

Every entry is one or more space-separated word patterns matched on consecutive lower-cased
tokens (ё folded to е, apostrophes dropped). Each word is one of:

- ``вода``   the word exactly;
- ``вод~``   the stem plus at most 3 more letters (a case ending: воды, воду, водой; not водитель);
- ``эваку*`` the stem plus anything (эвакуация, эвакуировать), but not another root joined by «о»/«е»
  («хлеб*» is not «хлебозаводская»: a compound that names the thing is a pattern of its own);
- ``?``      any one word (``house ? destroyed`` matches «house was destroyed»);
- ``a|b~``   any of the alternatives.

Russian stems come first in each table, then transliterations and English words. Tuned on the
validation split of the disaster messages only (see benchmarks/sms_eval.py).
"""

from __future__ import annotations

from typing import Literal

Command = Literal["yes", "no", "done", "stop", "start", "status", "help"]

# fmt: off
CATEGORY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "water": (
        "вод~", "водичк*", "питьев*", "попить", "пить", "жажд*", "бутилир*",
        "vod~", "voda", "vodichk*", "pitev*", "popit", "water", "drink", "drinking", "thirst*", "dehydrat*",
    ),
    "food": (
        "еда", "еды", "еду", "едой", "еде", "продукт*", "питани*", "пищ~", "хлеб*", "голод*", "кушать", "покушать",
        "поесть", "нечего есть", "продовольств*", "консерв*", "тушенк*", "паек*", "крупа", "крупы",
        "хлебобулоч*",
        "eda", "edy", "edu", "edoy", "produkt*", "hleb*", "khleb*", "golod*", "pitani*", "food*", "eat", "eating",
        "hungry", "hunger", "starv*", "rice", "bread", "meal*", "ration*", "nutrition*", "famine", "malnutrition",
        "malnourished", "flour", "beans", "milk",
    ),
    "shelter": (
        "жилье", "жилья", "жилью", "жильем", "ночлег*", "приют*", "кров", "крова", "палатк*", "негде жить", "негде ночевать", "ночевать",
        "переночевать", "размещени*", "сгорел* дом~", "дом~ сгорел*", "бездомн*", "на улице", "есть место|места",
        "свободн~ комнат~", "палаток", "замерза*", "мерзнем", "мерзнут",
        "дом~ разруш*|сгорел*|рухнул*|затопил*|смыло", "одеял*", "матрас*", "спальн* мешк~", "спальник*",
        "zhile", "zhilye", "zhilya", "zhilyo", "zhilie", "zhilya", "nochleg*", "palatk*", "negde zhit", "shelter*", "tent", "tents", "tarp*", "housing", "homeless",
        "accommodation*", "freezing", "zamerza*", "in the street", "in the streets", "sleeping outside", "sleep outside",
        "sheeting", "plastic sheet*", "mattress*", "sleeping mat*", "mats", "blanket*",
        "place to sleep|stay|live", "where to sleep|stay|live", "nowhere to sleep|stay|live", "makeshift", "sleep*",
        "shelterless", "spare room", "room for", "house~|home~ destroy*|broke*|collaps*|crush*|demolish*|damag*|crack*|fell|fallen|down|gone",
        "house~|home~ ? destroy*|broke*|collaps*|crush*|demolish*|damag*|crack*|fell|fallen|down|gone",
        "house~|home~ ? ? destroy*|broke*|collaps*|crush*|demolish*|damag*|crack*|fell|fallen|down|gone",
        "lost ? house~|home~", "no house~|home~", "dont have ? house~|home~", "dont have house~|home~",
    ),
    "medical": (
        "врач~", "доктор~", "скорая", "скорой", "скорую", "ранен*", "травм*", "ожог*", "больниц~", "медик~",
        "медицин*", "медпомощ*", "фельдшер*", "кровотеч*", "перелом*", "сердц~", "давлени~", "беременн*", "рожает",
        "роды", "болен", "больна", "болеет", "заболел*", "без сознания",
        "медсестр~", "медбрат~", "медпункт*", "травмпункт*", "поликлиник*", "госпитал*", "клиник*", "хирург*",
        "акушер*", "пациент*", "больн~", "болезн*", "болит", "болят", "боль", "боли", "лихорад*", "высок~ температур~",
        "понос*", "диаре*", "рвот*", "холер*", "инфекци*", "эпидеми*", "эпидемиолог*", "прививк*", "вакцинац*", "перв~ помощ~",
        "сломал* ног~|рук~|кост~|ребр~", "рана", "раны", "рану", "раной", "инфаркт*", "инсульт*",
        "сердечн~ приступ~", "одышк*", "тяжело|трудно дышать", "не может|могу дышать", "потерял* сознани~",
        "обморок*",
        "vrach~", "doktor~", "skoraya", "ranen*", "travm*", "bolnic*", "bolnits*", "medsestr*", "bolen", "bolna",
        "bolit", "ozhog*", "perelom*", "krovotech*", "beremenn*", "rozhaet", "bez soznaniya", "infarkt*",
        "pervaya|pervuyu pomoshch|pomosch|pomosh",
        "medical", "doctor*", "injur*",
        "wound*", "hospital*", "nurse*", "clinic*", "sick", "ill", "illness*", "health", "disease*", "ambulance*",
        "bleed*", "hurt", "pain", "surgery", "fever", "diarrh*", "cholera", "first aid",
        "treated", "infection*", "epidemic*", "pregnant", "patients", "patient", "medic",
        "medics", "physician*", "broken leg*|arm*|bone*", "fracture*", "vaccinat*", "malnutrition", "malnourished",
        "outbreak*", "measles", "sore", "inoculat*", "ailment*", "healthcare", "medecin*", "cases of",
        "paramedic*", "surgeon*", "midwi*", "trauma", "vomit*", "heart attack*", "stroke", "short of breath",
        "cant|cannot breathe", "breathing problem*|difficult*", "unconscious", "fainted", "passed out",
        "give|giving birth", "in labor|labour", "cpr",
    ),
    "medicine": (
        "лекарств*", "медикамент*", "таблет*", "инсулин*", "аптек*", "бинт*", "перевяз*", "антибиотик*", "препарат*",
        "аптечк*", "инсулинозавис*",
        "lekarstv*", "medikament*", "tabletk*", "insulin*", "aptek*", "medicine*", "medication*", "drug", "drugs",
        "pill*", "antibiotic*", "pharmac*", "bandage*", "vaccin*", "tablet*", "medical supplies", "medical kits",
        "serum", "chlorine", "mosquito nets",
    ),
    "evacuation": (
        "эваку*", "вывез*", "вывести", "выбраться", "заблокир*", "отрезан*", "спасател*", "застрял*", "спасти",
        "evaku*", "vyvez*", "spasateli", "evacuat*", "rescue*", "trapped", "stranded", "refugee*", "displaced",
        "relocat*", "get out", "stuck", "under the rubble", "under rubble", "search",
    ),
    "transport": (
        "машин~", "автомобил*", "транспорт*", "довез*", "подвез*", "отвез*", "перевез*", "водител*", "грузовик*",
        "газел*", "автобус*", "бензин*", "топлив*", "лодк~",
        "mashin~", "transport*", "dovez*", "podvez*", "gruzovik*", "voditel*", "truck*", "car", "cars", "vehicle*",
        "bus", "buses", "ride", "lift", "driver*", "fuel", "gasoline", "boat*", "helicopter*", "road", "roads",
        "airport*",
    ),
    "firefighting": (
        "пожар*", "туш~", "тушени*", "огнетушител*", "огонь", "огня", "горит", "горим", "возгорани*",
        "пожаротуш*",
        "pozhar*", "tushit*", "ogon", "fire", "fires", "firefight*", "extinguish*", "blaze", "wildfire*",
    ),
    "clothing": (
        "одежд*", "одеял*", "обув*", "куртк*", "теплые вещи", "вещи", "носк~", "плед*",
        "odezhd*", "odeyal*", "cloth*", "blanket*", "shoe*", "jacket*", "coat", "coats", "garment*",
    ),
    "hygiene": (
        "гигиен*", "мыло", "мыла", "памперс*", "подгузн*", "прокладк*", "туалет*", "шампун*", "зубн~",
        "gigien*", "hygien*", "soap", "diaper*", "toilet*", "sanitation", "latrine*", "sanitary",
    ),
    "labour": (
        "рабочи~ рук~", "рабочи~", "разобрать", "разбор*", "копать", "грузчик*", "помочь руками",
        "rabochie ruki", "labour", "labor", "workers", "hands", "dig", "digging", "clear debris", "clean up",
    ),
    "animals": (
        "животн*", "собак~", "кошк~", "кот", "котов", "скот~", "корм", "корма", "ветеринар*", "питомц*",
        "zhivotn*", "sobak*", "animal*", "pet", "pets", "dog", "dogs", "cat", "cats", "livestock", "cattle", "vet",
        "veterinar*",
    ),
    "power": (
        "электричеств*", "свет", "света", "генератор*", "зарядк~", "зарядить", "розетк~", "электроэнерг*",
        "svet", "sveta", "generator*", "electric*", "power", "generator*", "charger*", "batteries", "battery",
        # frost: no heating is what a heater or a generator answers
        "отоплени*", "обогреват*", "обогрев", "тепла", "тепловентилятор*", "тепловая пушка", "тепловые пушки",
        "otoplen*", "obogrevat*", "heating", "heater*", "no heat", "space heater*",
    ),
    "other": (
        # frost: fuel for the stove; pumps (a flooded cellar as much as a fire)
        "дров~", "газ", "газа", "газу", "газом", "газов~ баллон~", "уголь", "угля", "помп~", "мотопомп*", "насос*",
        "drova", "drov", "firewood", "fire wood", "wood for", "gas cylinder*", "propane", "coal", "pump", "pumps",
    ),
}
"""Keyword patterns per category code; their order is the order of ``ParsedSms.categories``."""

CATEGORY_NOT: dict[str, tuple[str, ...]] = {
    "water": (
        "уров~ вод~", "больш~ вод~", "талы~ вод~", "сточн~ вод~", "морск~ вод~",
        "flood water*|waters", "floodwater*", "sea water", "seawater", "water level*", "water resources",
        "water treatment", "rainwater", "under water", "underwater", "above the water", "water and power",
        "surface water", "ground water", "groundwater", "high water", "water table", "water released",
        "water balance", "stagnant water",
    ),
    "medical": (
        "water treatment", "treatment plant*", "take care", "care of", "in care", "health ministry",
        "treated water", "cases of water", "высок~ температур~ воздух~",
    ),
    "evacuation": (
        "search engine*",
    ),
    "firefighting": (
        "opened fire", "open fire", "ceasefire", "cease fire", "cease-fire",
    ),
}
"""Phrases that contain a keyword of a category without being about it (flood water, water level)."""

CATEGORIES: tuple[str, ...] = tuple(CATEGORY_KEYWORDS)
"""Every category code the parser can return (``other`` only for things no category names: firewood, gas, a pump)."""

COMMAND_WORDS: dict[str, Command] = {
    "да": "yes", "da": "yes", "yes": "yes", "y": "yes", "ок": "yes", "ok": "yes",
    "нет": "no", "net": "no", "no": "no", "n": "no",
    "готово": "done", "gotovo": "done", "done": "done", "выполнено": "done", "сделано": "done",
    "стоп": "stop", "stop": "stop", "отписаться": "stop", "unsubscribe": "stop", "stopall": "stop",
    "отписка": "stop", "отпишите": "stop", "otpiska": "stop",
    # Twilio's own opt-out and opt-in words: it blocks (or unblocks) the phone on them, so we do too
    # (as Twilio does, only when the word is the whole message: ``ALONE_ONLY``).
    "cancel": "stop", "end": "stop", "quit": "stop", "optout": "stop", "revoke": "stop",
    "старт": "start", "start": "start", "unstop": "start",
    "статус": "status", "status": "status",
    "помощь": "help", "pomoshch": "help", "pomosch": "help", "pomosh": "help", "help": "help", "справка": "help",
}
"""A command is its word alone, or followed by a need code or match number («ДА 4KX9P2»)."""

POLITE = frozenset({"please", "spasibo", "thank", "thanks", "you", "пожалуйста", "спасибо", "спс"})
"""Words that may follow a command without making it a sentence («нет, спасибо»)."""

OFFER_CUES: tuple[str, ...] = (
    "могу", "можем", "смогу", "сможем", "готов~", "предлага*", "предостав*", "отдам", "отдадим", "привезу",
    "привезем", "подвезу", "довезу", "отвезу", "помогу", "поможем", "приму", "примем", "приютим", "приючу", "возьму",
    "раздаем", "раздаю", "есть место", "есть места",
    "mogu", "mozhem", "gotov~", "predlaga*", "otdam", "privezu", "pomogu", "pomozhem", "can help", "could help",
    "can offer", "can provide", "can give", "can bring", "can drive", "can take", "can host", "can deliver",
    "can donate", "offer", "offering", "offers", "donate", "donating", "volunteer", "volunteering", "want to help",
    "would like to help", "like to help", "willing to", "ready to help", "happy to help", "glad to help", "i can",
    "we can", "available to",
    # «could» as well as «can», more things one can do, and saying who one is («я врач», "I am a nurse")
    "мог~ бы", "отдаю", "отдаем", "поделюсь", "поделимся", "приготовлю", "приготовим", "накормим", "пожертв*", "волонтер*",
    "доброволец", "добровольц*", "имею опыт", "есть опыт",
    "я врач~|медсестр~|медбрат~|фельдшер~|водител~|спасател~|электрик~|сантехник~|строител~|психолог~|волонтер~",
    "mogla", "mogli", "mog by", "otdayu", "volonter*", "ya vrach|medsestra|voditel|volonter",
    "i|we could", "can donat*", "can drop off", "can pick up", "can share", "can lend", "have experience",
    "certified", "licensed",
    "i am|im a|an doctor|nurse|paramedic|medic|physician|surgeon|driver|electrician|plumber|carpenter|volunteer",
    "i am|im a|an ? doctor|nurse|paramedic|medic|physician|surgeon|driver|electrician|plumber|carpenter|volunteer",
    # a need that is the other person's, said by a helper («если нужно», "if needed", "anything you need")
    "если нужн~|надо|потребуется", "при|по необходимости", "кому нужн~|надо", "чем могу помочь", "обращайтесь",
    "esli nuzhn*|nado", "komu nuzhn*|nado",
    "if needed", "if need be", "as need be", "as needed", "if you need*", "if anyone need*", "anyone who need*",
    "anything you need*", "whatever you need*", "whatever is|are needed", "whatever is most needed", "most needed",
    "what else do you need", "who needs",
)
"""An offer of help. «I have»/«у меня есть» count only when a thing follows (POSSESSIVE_CUES). A need
cue inside an offer cue («если нужно», "if needed") is not a need."""

OFFER_NOT_AFTER = frozenset(
    """где как чтобы если когда куда чем что кто кого кто-нибудь кто-то
    gde kak chtoby esli kto
    where how so what if when until whether that who anyone anybody someone somebody""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""«где я могу получить воду», "so we can get food", "who can give us water", «у кого есть лодка»:
within two words before an offer or possessive cue these make it a question or a purpose, not an offer."""

QUESTION_AFTER = frozenset({"ли", "li"})
"""«Могу ли я…», «Есть ли у кого…»: right after an offer or possessive cue, a question."""

OFFER_NOT_BEFORE: tuple[str, ...] = (
    "получить", "найти", "купить", "узнать", "обратиться", "поесть", "попить",
    "poluchit", "nayti",
    "find", "obtain", "receive", "ask", "reach", "expect", "eat", "drink", "buy", "pay",
)
"""«могу получить», "we can find food": right after «могу»/"I can" a verb of getting makes it a need."""

POSSESSIVE_NOT: tuple[str, ...] = (
    "проблем~", "нехватк~", "problem*", "issue*", "shortage*", "trouble*",
)
"""«у нас есть проблемы с водой», "we have water and food issues": a thing followed by one of these
within POSSESSIVE_REACH words is a need."""

POSSESSIVE_CUES: tuple[str, ...] = (
    "есть", "имеется",
    "est", "i have", "we have", "ive got", "i got", "we got",
)
"""«есть машина», "I have a truck": an offer when a thing (not people in trouble) follows within
POSSESSIVE_REACH words (further on, «I have problems … no food» is as likely a need)."""

POSSESSIVE_REACH = 4

NEED_CUES: tuple[str, ...] = (
    "нужн*", "нужен", "надо", "требу*", "необходим*", "нехват*", "не хватает", "кончил*", "закончил*", "негде",
    "нечего", "прошу", "просим", "пришлите", "привезите", "дайте", "ищем", "ищу",
    "у кого", "есть ли", "кто может|сможет|нибудь", "who can|could|has|have", "anyone|anybody|someone|somebody",
    "nuzhn*", "nado", "prosim", "proshu", "negde", "nechego", "need*", "require*", "lack*", "please", "send",
    "ran out", "out of", "short of", "running out", "asking", "request*", "desperate", "waiting for", "dont have",
    "do not have", "havent", "have not", "nothing", "pleas", "plz", "pls", "hungry", "thirsty",
)
"""A request, but only when it names what is needed: «нужна вода» is a need, «нужно узнать» is not."""

HELP_CUES: tuple[str, ...] = (
    "помоги*", "спаси", "спасите", "спасти", "помощь", "помощи", "сос",
    "sos", "pomogi*", "spasi", "spasite", "pomosh*", "help", "save us", "save me", "we are dying", "dying",
)
"""A call for help: a need even when it does not say of what («нужна помощь», «SOS»)."""

NO_LONGER = frozenset(
    """не ne not dont doesnt didnt longer""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Right before a need cue these say it is not (or no longer) needed: «больше не нужна», "no longer
need", "don't need"."""

RECEIVED_CUES: tuple[str, ...] = (
    "привезли", "получили", "доставили", "помогли", "уже есть", "помощь пришла|приехала", "пришла|приехала помощь",
    "privezli", "poluchili", "dostavili", "pomogli",
    "received", "delivered", "already have|got", "help came|arrived", "has|have arrived",
)
"""What was needed has come («воду привезли», "we received the water"): alone, this says a request
is over, not a new one."""

FIRST_PERSON = frozenset(
    """меня мне мои мой моя мы нам нас наш наша наши я
    i im me menya mne my nam nas our ours us we were ya""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""A message about oneself: categories alone make it a need only then, or when it is short."""

NEGATIONS = frozenset(
    """без не нет нечего
    cannot cant dont ne never no not nothing""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Before a category («нет воды», «без еды», «no food») a negation names a need."""

CRITICAL_CUES: tuple[str, ...] = (
    "сос", "умира*", "умрем", "умрут", "задыха*", "пожар рядом", "огонь", "огня", "горим", "горит дом", "тонем",
    "тонут", "не дыш*", "без сознания", "кровотеч*", "спасите",
    "sos", "umira*", "zadyha*", "pozhar ryadom", "ogon", "spasite", "trapped", "dying", "die", "unconscious",
    "not breathing", "bleeding", "drowning", "fire nearby", "fire near", "under the rubble", "under rubble",
    "critical", "срочн*", "srochn*", "urgent*",
)
"""Life-safety, or said to be urgent in so many words («срочно», "urgent": the person knows best):
the need goes out in SMS waves at once."""

URGENT_CUES: tuple[str, ...] = (
    "горит", "дети", "детей", "детьми", "ребенок", "ребенка", "ребенку", "младен*", "грудн*", "беремен*", "инвалид*",
    "пожил*", "ожог*", "ранен*", "травм*", "пожар~", "скорая", "скорую",
    "deti", "detey", "rebenok", "pozhar", "emergency", "asap", "immediately", "injured",
    "wounded", "children", "child", "baby", "babies", "pregnant", "elderly", "desperate", "hungry", "starving",
)
"""Urgent but not (yet) life-threatening: children, injuries, a fire somewhere."""

QUANTITY_UNITS: tuple[str, ...] = (
    "литр*", "л", "бутыл*", "кг", "килограм*", "шт", "штук~", "пачк~", "упаков*", "коробк~", "мешк~", "ящик~",
    "litr*", "butyl*", "sht", "liter*", "litre*", "l", "bottle*", "kg", "kilo*", "pack*", "box*", "bag*", "pcs",
    "pieces", "units", "gallon*", "sacks", "cans",
)
"""Units of goods after a number («5 литров»): the quantity counts them."""

PEOPLE_UNITS: tuple[str, ...] = (
    "человек~", "чел", "людей", "семей", "семьи", "детей", "взрослых", "детям",
    "chelovek~", "chel", "lyudey", "lyudei", "detey", "people", "persons", "person", "families", "family", "kids",
    "children", "adults", "peoples", "victims",
)
"""People after a number («3 человека»): the quantity counts them when no goods unit is given."""

TIME_UNITS: tuple[str, ...] = (
    "секунд~", "минут~", "час", "часа", "часов", "день", "дня", "дней", "сутки", "суток", "ночь", "ночи", "ночей",
    "недел~", "месяц~",
    "dnya", "dney", "den", "sutok", "chasa", "chasov", "nedel*",
    "second*", "minute*", "min", "hour*", "hrs", "day", "days", "night*", "week*", "month*",
)
"""Spans of time after a number («3 дня», "2 days"): the number is how long, never a quantity or a task."""

NUMBER_WORDS: dict[str, int] = {
    "один": 1, "одна": 1, "два": 2, "две": 2, "двое": 2, "три": 3, "трое": 3, "четыре": 4, "четверо": 4, "пять": 5,
    "пятеро": 5, "шесть": 6, "шестеро": 6, "семь": 7, "семеро": 7, "восемь": 8, "девять": 9, "десять": 10, "one": 1,
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "dvoe": 2,
    "troe": 3,
    # genitive: «семья из четырех», «для пяти человек»
    "двух": 2, "трех": 3, "четырех": 4, "пяти": 5, "шести": 6, "семи": 7, "восьми": 8, "девяти": 9, "десяти": 10,
}

PLACE_MARKERS = frozenset((
    "близ", "в", "во", "возле", "г", "город", "д", "дер", "деревня", "из", "нп", "около", "п", "под", "пос",
    "поселок", "рядом с", "с", "село",
    "at", "in", "iz", "near", "okolo", "pod", "selo", "v", "vo", "vozle",
))
"""Words after which a capitalised word is a place («в Рязани», «деревня Ивановка», «in Jacmel»."""

SETTLEMENT_WORDS = frozenset(
    """деревня деревне деревни деревню дер д село селе села с поселок поселке поселка пос п пгт рп хутор хуторе
    хутора хут х станица станице станицы ст""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Words that say the name after them is a settlement's («деревня Старая», «пос. Новый»); a letter
alone counts only with its dot («д. Старая»)."""

NOT_PLACES: tuple[str, ...] = (
    "дом~", "квартир~", "подвал~", "лес~", "поле", "город~", "деревн~", "сел~", "район~", "больниц~", "машин~",
    "центр~", "течени~", "час~", "день", "дня", "ночь", "ночи", "утр~", "вечер~", "школ~", "подъезд~", "этаж~",
    "здани~", "помощ~", "беде", "опасност~",
    "the", "a", "an", "my", "our", "need", "this", "that", "house", "home", "area", "zone", "order", "front", "time",
    "case", "town", "city", "village", "place",
)
"""Words after «в»/«in» that are not places when the message gives no capital letters to go by."""

STREET_GENITIVES = frozenset(
    """мира победы октября революции свободы труда дружбы маркса энгельса гоголя фрунзе комсомола молодежи
    mira pobedy oktyabrya""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""The commonest streets named by a genitive noun (ул. Мира, ул. Победы), which no ending gives away."""

NOT_STREET_NAMES = frozenset(
    """примерно около минимум максимум количество кол-во итого всего размер этаж квартира кв подъезд корпус
    школа возраст age size floor apt apartment about approx total""".split()  # noqa: SIM905
)
"""Words that count or say which floor or flat («Этаж 5», «Итого 5», "Age 5"), never a street."""

FIRE_FLOOD_WORDS: tuple[str, ...] = (
    "пожар", "пожара", "пожаре", "пожару", "пожаром", "пожары", "пожаров", "пожарах", "огонь", "огня", "горит",
    "горят", "горим", "потоп~", "наводнени~", "затоп*", "тонем", "тонут",
    "pozhar", "pozhara", "fire", "fires", "flood*",
)
"""What a fire or a flood is called: never the name of a street, whatever marker stands before it
(«площадь пожар», «Улица горит»); «Пожарная» is."""

FIRST_NAMES = frozenset(
    """анна anna ольга olga роза rosa roza майя мая maya maia надежда nadezhda вера vera любовь мария maria
    mariya марина marina елена elena наталья natalya ирина irina татьяна tatyana светлана svetlana александр
    aleksandr alexander иван ivan николай nikolay сергей sergey михаил mikhail павел pavel петр petr андрей
    andrey юлия yulia софья sofia алиса alisa""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""First names that are also villages' names: "Anna needs insulin" is Anna, not Анна (Voronezh), and
«Ольга, нужна вода» speaks to Olga from the village Ольга (Primorye) no more than from anywhere."""

# Command words that are a command only as the whole message: "End of Lenin street…" is a need,
# "Cancel please, we are fine" a sentence; Twilio, too, acts on them only alone.
ALONE_ONLY = frozenset({"cancel", "end", "quit", "optout", "revoke", "unstop"})

STOPWORDS = frozenset(
    """а бы в вам вас ваш вечер во вот все холодно жарко всех всё вы где да день для до добрые добрый друзья есть еще же за здесь
    здравствуйте и из или к как ко когда кто ли люди мало меня мне много мое можно мои мой моя мы на над нам нами
    нас наш наша наше наши не нету ни но о об он она они оно от очень пишу по под пожалуйста пока помогите при
    привет про просьба больше ничего ребята с сейчас семья со спасибо срочно так также там тоже только тут ты у уже утро человек
    что чтобы эта это этот я
    a about after again all also am an and any are as at be been before being both but by can chto could da dear
    did dlya do does down each eshche est eto few for from gde god had has have he hello here hi how i if in into
    is it its iz just k kak kto madam many may me menya might mne mnogo more most much must my na nam nas ne no
    not o ochen of off on once only or other our out over own please po pod pozhalujsta pozhaluysta privet s same
    seychas shall she should sir so some spasibo srochno still such tam than thank thanks that the then there
    these they this those to tolko too tut u up us uzhe v very vse vy was we were what when where which who why
    will with would ya yes you your anymore longer""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Common words that are never a place name."""

TRANSLIT_WORDS = frozenset(
    """nuzhna nuzhno nuzhen nuzhny nado net est mogu pomogite pomosch pomoshch pomosh voda vody vodu eda edy edu
    zhile zhilye zhilyo zhilie lekarstva lekarstv srochno deti detey rebenok mashina mashinu evakuaciya
    evakuatsiya spasite v na u nas menya ya my bez negde zhit gde ryadom pozhar ogon vrach skoraya produkty hleb
    khleb odezhda dom ul ulitsa chelovek lyudey litrov km da gotovo pomogu privezu dovezu i s iz kto po dlya
    nuzhen pit vyvezti gorit gorim""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Common words of Russian written in Latin letters: they make a Latin message Russian."""

ENGLISH_WORDS = frozenset(
    """the a we i need water food help please have in at to of and no can my our is are for with yes stop done
    status start truck shelter medicine you us there here people all am was it send some family children
    house car offer give bring drive""".split()  # noqa: SIM905 - a word list reads better than a list of strings
)
"""Common English words, against which TRANSLIT_WORDS are counted."""
# fmt: on
