"""A second, independent held-out PII corpus ("unseen"), for the final honest measurement.

Written from scratch, without looking at the other corpora (bench/pii_corpus.py's templates,
bench/pii_heldout.py), at the detector or at its training data; only ``Sample`` and
``GoldSpan`` are shared. Nothing in it may be used to build, train or tune a detector: once
a result on it has been looked at to change the detector, it is no longer unseen.

Data (bench/unseen/): ``people.txt`` holds 1,193 people of 113 cultures written by hand
(no Faker, no name generator, no package's lists); ``templates.txt`` holds 179 hand-written
templates in 16 business styles. Pattern values are made here: phone numbers vary the
``phonenumbers`` package's example numbers (kept valid) for 98 regions in national,
international and E.164 form; cards pass Luhn; IBANs carry valid check digits; SSNs use
valid area/group/serial ranges; IPs are v4 and v6. (National check digits inside a BBAN
are not computed: only the IBAN mod-97 check holds.)

Labeling conventions (what the gold spans mean):

* PERSON covers the whole written name: titles before it (Dr., Mrs, Sheikh, Datuk, Khun,
  dhr., Cllr...) and post-nominals after it (", PhD", " Jr.", " III") are inside the span,
  as are honorifics written onto the name ("Tsuchiya-san", "Emre Bey"), particles
  ("van der", "bin", "Ní", "al-") and the given-name honorifics of Karen and Balinese names
  (Saw, Naw, I, Ni). A possessive "'s" is outside. "SURNAME, Given" and airline
  "SURNAME/GIVEN MS" forms are one span. Name parts in separate fields (a CSV's
  first_name and last_name columns) are separate spans. The "@" of a chat mention is
  outside; names inside e-mail addresses are only part of the EMAIL_ADDRESS span.
* LOCATION: cities, countries, regions, landmarks, airports and streets or buildings, also
  those named after people ("Martin Luther King Jr. Blvd", "Jomo Kenyatta International
  Airport", "Eiffel Tower"); house numbers and postcodes are outside.
* Unlabeled on purpose (they must not be PERSON): companies and brands, also those named
  after people (Ferrari, Tim Hortons, Estée Lauder, Slaughter and May, Kuehne+Nagel),
  products (Jenkins, Alexa, Kafka), ships, diseases (Parkinson's disease), laws, units
  and methods (Ohm's law, newtons, Gantt chart), holidays (St. Patrick's Day), weekdays,
  months, job titles, departments and ordinary words that are also names (will, grace,
  bill, mark, rose, may, june, hope, joy, sunny, faith, amber, ruby, summer, jack, frank).
* EMAIL_ADDRESS, PHONE_NUMBER (as written, with its parentheses and "+"), CREDIT_CARD,
  IBAN_CODE, US_SSN, IP_ADDRESS: the value as written, with its spaces or dashes.

``Sample.source`` is ``unseen/<style>``. Build with ``build_unseen_corpus(seed)``;
``python -m bench.pii_unseen`` checks every span and prints counts and a few samples.
"""

# ruff: noqa: RUF001  (real spellings use the okina, the dotless i and typographic apostrophes)
from __future__ import annotations

import functools
import ipaddress
import random
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from bench.pii_corpus import GoldSpan, Sample

DATA_DIR = Path(__file__).with_name("unseen")
N_TEXTS = 1500
TYPES = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "IP_ADDRESS",
)
# Cultures whose names are on typical Western name lists; the rest count as "outside".
WESTERN_GROUPS = ("western", "european_minority", "slavic", "iberian_latin")

# ----------------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Person:
    culture: str
    group: str
    gender: str
    given: str
    family: str
    short: str
    order: str  # "GF" or "FG"
    alt: bool  # an FG name also written given-first
    nosur: bool
    addr_given: bool
    suffix_ok: bool
    patron_init: bool
    titles: tuple[str, ...]
    hon: str  # honorific written after the name ("" when none)
    hon_given: bool


def load_people() -> list[Person]:
    people: list[Person] = []
    head: dict[str, str] = {}
    culture = group = order = ""
    for raw in (DATA_DIR / "people.txt").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@ "):
            parts = [p.strip() for p in line[2:].split("|")]
            culture, group, order = parts[:3]
            head = {}
            for opt in parts[3:]:
                key, _, value = opt.partition("=")
                head[key] = value or "1"
            continue
        gender, rest = line.split(" ", 1)
        fields = [f.strip() for f in rest.split("|")]
        given, family = fields[0], fields[1] if len(fields) > 1 else ""
        short = fields[2] if len(fields) > 2 and fields[2] else given
        extra = head.get("mt" if gender == "m" else "ft", "")
        hon_m, _, hon_f = head.get("hon", "").partition("/")
        people.append(
            Person(
                culture=culture,
                group=group,
                gender=gender,
                given=given,
                family=family,
                short=short,
                order=order,
                alt="alt" in head,
                nosur="nosur" in head or not family,
                addr_given=head.get("addr") == "given",
                suffix_ok="suffix" in head,
                patron_init=head.get("init") == "patron",
                titles=tuple(t for t in extra.split(",") if t),
                hon=hon_m if gender == "m" else hon_f,
                hon_given=head.get("honbase") == "given",
            )
        )
    return people


# -------------------------------------------------------------------------------- templates

_PH = re.compile(r"\{\{([a-z][a-z0-9]*)(?:\.([A-Za-z_0-9]+))?\}\}")
# Ordinary words that are also given names, and eponyms written into the templates.
_NAME_WORDS = re.compile(
    r"\b(will|grace|bill|mark|rose|may|june|hope|joy|sunny|faith|amber|ruby|summer|jack|frank)\b",
    re.IGNORECASE,
)
_LITERAL_EPONYMS = re.compile(
    r"(Parkinson's|Alzheimer's|Crohn's|Hashimoto's|Graves'|Guillain-Barré|Raynaud's|Sjögren's|"
    r"Bell's|Kawasaki|Huntington's|Epstein-Barr|Achilles|Tourette|Ohm's|Murphy's|Conway's|Dijkstra's|"
    r"Kalman|Bloom filter|Pareto|Doppler|Bayesian|Fourier|Gantt|Kanban|newtons|Jenkins|jenkins|Kafka|"
    r"Alexa|Siri|Grafana|Salesforce|Excel|Ferrari|Mercedes-Benz|Dell|McDonald's|Dyson|Bosch|Heinz|"
    r"Cadbury|Tim Hortons|Nando's|Herman Miller|Dr\. Martens|Louis Vuitton|Hewlett-Packard|Ford|"
    r"Toyota|Honda|Fulbright|Chief Executive|Father's Day|Mother's Day|Christmas|Uncle Jack)"
)
# What a placeholder inserts that a PERSON detector may wrongly take for a name.
TRAP_KIND = {
    "brand": "brand", "pbrand": "brand", "firm": "brand", "hotel": "brand", "logi": "brand",
    "vessel": "brand", "co": "brand", "product": "product", "disease": "disease",
    "eponym": "eponym", "holiday": "holiday", "day": "calendar", "month": "calendar",
    "date": "calendar", "job": "job_dept", "dept": "job_dept", "city": "place",
    "pcity": "name_like_place", "country": "place", "region": "place", "landmark": "place",
    "airport": "name_like_place", "street": "place", "pstreet": "name_like_place",
}  # fmt: skip
# Kinds that count as a precision trap for names (places are labeled but still traps for PERSON).
PRECISION_TRAPS = ("brand", "product", "disease", "eponym", "holiday", "calendar", "job_dept",
                   "place", "name_like_place", "name_word", "literal_eponym")  # fmt: skip
NAME_LIKE_TRAPS = ("brand", "product", "disease", "eponym", "holiday", "name_like_place",
                   "name_word", "literal_eponym")  # fmt: skip


@dataclass(frozen=True)
class Template:
    style: str
    tid: str
    body: str
    transform: str  # "", "upper" or "lower"

    @property
    def literal_traps(self) -> list[str]:
        literal = _PH.sub(" ", self.body)
        kinds = []
        if _NAME_WORDS.search(literal):
            kinds.append("name_word")
        if _LITERAL_EPONYMS.search(literal):
            kinds.append("literal_eponym")
        return kinds


def load_templates() -> list[Template]:
    out: list[Template] = []
    style = transform = ""
    lines: list[str] = []
    per_style: Counter[str] = Counter()

    def flush() -> None:
        body = "\n".join(ln.rstrip() for ln in lines).strip("\n").replace("\\t", "\t")
        if style and body.strip():
            per_style[style] += 1
            out.append(Template(style, f"{style}-{per_style[style]:02d}", body, transform))

    for raw in (DATA_DIR / "templates.txt").read_text(encoding="utf-8").splitlines():
        if raw.startswith("@@#"):
            continue
        if raw.startswith("@@ "):
            flush()
            lines = []
            parts = raw[3:].split()
            style = parts[0]
            transform = parts[1].lstrip("!") if len(parts) > 1 else ""
            continue
        if style:
            lines.append(raw)
    flush()
    return out


# ---------------------------------------------------------------------------------- fillers

CITIES = (
    "Kigali", "Gitega", "Bujumbura", "Juba", "Malakal", "Addis Ababa", "Adama", "Mogadishu",
    "Hargeisa", "Dakar", "Bamako", "Ségou", "Conakry", "Harare", "Bulawayo", "Gaborone",
    "Francistown", "Lagos", "Enugu", "Kumasi", "Accra", "Nairobi", "Kisumu", "Mombasa",
    "Arusha", "Durban", "Gqeberha", "Nukuʻalofa", "Suva", "Lautoka", "Hagåtña", "Apia",
    "Rotorua", "Whanganui", "Gisborne", "Alice Springs", "Tromsø", "Kautokeino", "Karasjok",
    "Tórshavn", "Klaksvík", "Leeuwarden", "Sneek", "Quimper", "Brest", "Ajaccio", "Bastia",
    "Valletta", "Mdina", "Nalchik", "Grozny", "Kazan", "Ufa", "Ürümqi", "Kashgar", "Dushanbe",
    "Khujand", "Ashgabat", "Bishkek", "Osh", "Quetta", "Gwadar", "Hyderabad", "Larkana",
    "Amritsar", "Ludhiana", "Ahmedabad", "Surat", "Pune", "Nagpur", "Kochi",
    "Thiruvananthapuram", "Mysuru", "Hubballi", "Bhubaneswar", "Cuttack", "Guwahati",
    "Jorhat", "Malé", "Thimphu", "Paro", "Kathmandu", "Pokhara", "Chennai", "Madurai",
    "Dhaka", "Kolkata", "Chattogram", "Cebu City", "Laoag", "Vigan", "Banda Aceh", "Denpasar",
    "Ubud", "Dili", "Baucau", "Meizhou", "Kota Kinabalu", "George Town", "Tainan", "Kaohsiung",
    "Taichung", "Sapporo", "Naha", "Nago", "Ulaanbaatar", "Vientiane", "Luang Prabang",
    "Savannakhet", "Mae Sot", "Hpa-an", "Chiang Mai", "Khon Kaen", "Phnom Penh", "Battambang",
    "Da Nang", "Huế", "Cần Thơ", "Busan", "Daejeon", "Kobe", "Kanazawa", "Chengdu", "Kunming",
    "Xiamen", "Cusco", "Puno", "La Paz", "El Alto", "Oruro", "Asunción", "Encarnación",
    "Temuco", "Valdivia", "Oaxaca", "Puebla", "Mérida", "Dangriga", "La Ceiba",
    "Port-au-Prince", "Cap-Haïtien", "Praia", "Mindelo", "Kingston", "Montego Bay", "Amman",
    "Beirut", "Fez", "Oran", "Tunis", "Muscat", "Sharjah", "Doha", "Jeddah", "Shiraz",
    "Tabriz", "Izmir", "Trabzon", "Haifa", "Yerevan", "Gyumri", "Tbilisi", "Kutaisi", "Gdańsk",
    "Łódź", "Brno", "Košice", "Lviv", "Kharkiv", "Novosibirsk", "Niš", "Plovdiv", "Split",
    "Bilbao", "Girona", "Braga", "Porto", "Recife", "Belo Horizonte", "Manaus", "Guadalajara",
    "Monterrey", "Lyon", "Rennes", "Leipzig", "Freiburg", "Utrecht", "Groningen", "Bologna",
    "Palermo", "Bergen", "Umeå", "Aarhus", "Tampere", "Cork", "Galway", "Inverness",
    "Aberdeen", "Cardiff", "Aberystwyth", "Leeds", "Norwich", "Boise", "Tucson", "Duluth",
    "Winnipeg", "Perth", "Hobart", "Brisbane",
)  # fmt: skip
# Places that are, or look like, people's names.
PERSON_LIKE_CITIES = (
    "Charlotte", "Victoria", "Eugene", "Austin", "Jackson", "Florence", "Lincoln", "Houston",
    "Washington", "São Paulo", "San Francisco", "St. Louis", "Santa Clara", "Adelaide",
    "Darwin", "Wellington", "Nelson", "Hamilton", "Kimberley", "Georgetown", "Brazzaville",
    "Alexandria", "Charleston", "Louisville", "Raleigh", "Dallas", "Tyler", "Jacksonville",
    "Stanley", "Sucre", "Ho Chi Minh City", "Saint-Louis", "São Tomé", "Elizabeth",
    "Marysville", "Livingstone", "Port Louis", "Cristóbal Colón", "Abraham's Bay",
)  # fmt: skip
COUNTRIES = (
    "Rwanda", "Burundi", "South Sudan", "Ethiopia", "Senegal", "Mali", "Guinea", "Zimbabwe",
    "Botswana", "Nigeria", "Ghana", "Kenya", "Tanzania", "Tonga", "Fiji", "Samoa", "Guam",
    "New Zealand", "Aotearoa", "Australia", "Norway", "the Faroe Islands", "the Netherlands",
    "France", "Malta", "Russia", "China", "Tajikistan", "Turkmenistan", "Kyrgyzstan",
    "Pakistan", "India", "the Maldives", "Bhutan", "Nepal", "the Philippines", "Indonesia",
    "Timor-Leste", "Japan", "Peru", "Bolivia", "Paraguay", "Chile", "Mexico", "Honduras",
    "Belize", "Haiti", "Cabo Verde", "Jamaica", "Laos", "Myanmar", "Thailand", "Cambodia",
    "Vietnam", "Mongolia", "Colombia", "Seychelles", "the Marshall Islands",
    "the Cook Islands", "the Solomon Islands", "Mauritius", "Saint Lucia", "Iceland",
    "Somalia", "Uganda", "Morocco", "Lebanon", "Georgia", "Armenia", "Türkiye", "Canada",
)  # fmt: skip
REGIONS = (
    "Kabardino-Balkaria", "Tatarstan", "Bashkortostan", "Xinjiang", "Balochistan", "Sindh",
    "Punjab", "Gujarat", "Kerala", "Karnataka", "Odisha", "Assam", "Maharashtra", "Aceh",
    "Bali", "Okinawa", "Hokkaido", "Yucatán", "Araucanía", "Friesland", "Brittany", "Corsica",
    "Finnmark", "Sápmi", "the Northern Territory", "Arnhem Land", "Tasmania", "Queensland",
    "Virginia", "Maryland", "Louisiana", "Pennsylvania", "Northland", "Waikato",
    "Matabeleland", "Mashonaland", "Oromia", "Amhara", "Tigray", "Casamance", "Kayin State",
    "Sabah", "Sarawak", "Mindanao", "the Visayas", "Ilocos Norte", "Siberia", "Chechnya",
    "Adygea", "Sughd", "the Chuy Valley", "the Altiplano", "the Gran Chaco", "Bohemia",
)  # fmt: skip
LANDMARKS = (
    "the Eiffel Tower", "Victoria Falls", "Lake Victoria", "Mount Kilimanjaro",
    "Table Mountain", "Uluru", "Kata Tjuta", "Milford Sound", "Burj Khalifa", "the Taj Mahal",
    "Angkor Wat", "Borobudur", "Tanah Lot", "Machu Picchu", "Lake Titicaca", "Chichén Itzá",
    "Sükhbaatar Square", "the Mandela Bridge", "the Hoover Dam", "the Lincoln Memorial",
    "Rockefeller Center", "Carnegie Hall", "Tower Bridge", "the Brandenburg Gate",
    "the Golden Gate Bridge", "Ha Long Bay", "Mount Fuji", "Shuri Castle",
    "the Great Mosque of Djenné", "Lalibela", "the Kenyatta International Convention Centre",
    "Rizal Park", "Plaza de Mayo", "Place Charles de Gaulle", "Trafalgar Square",
    "the Kwame Nkrumah Mausoleum", "the Chinggis Khaan Statue Complex", "Plaza Bolívar",
    "Hagia Sophia", "the Blue Mosque", "Lake Kivu", "Mount Kenya", "the Okavango Delta",
    "Lake Malawi", "Pyramids of Giza", "Jemaa el-Fnaa", "Wat Phou", "Patuxai", "That Luang",
    "the Kazan Kremlin", "Registan Square", "Tiger's Nest Monastery", "Kaziranga",
    "Chilika Lake", "Tjibaou Cultural Centre", "Waitangi Treaty Grounds", "Ha'amonga 'a Maui",
)  # fmt: skip
# Landmarks named after people (without "the").
PERSON_LANDMARKS = (
    "Eiffel Tower", "Victoria Falls", "Lake Victoria", "Sükhbaatar Square", "Mandela Bridge",
    "Hoover Dam", "Lincoln Memorial", "Rockefeller Center", "Carnegie Hall", "Rizal Park",
    "Place Charles de Gaulle", "Kwame Nkrumah Mausoleum", "Chinggis Khaan Statue Complex",
    "Plaza Bolívar", "Kenyatta International Convention Centre", "Tjibaou Cultural Centre",
    "Ha'amonga 'a Maui",
)  # fmt: skip
PLACE_AIRPORTS = (
    "Kigali International Airport", "Nadi International Airport", "Paro International Airport",
    "El Alto International Airport", "Bole International Airport", "Velana International Airport",
    "Wattay International Airport", "Fuaʻamotu International Airport",
)  # fmt: skip
AIRPORTS = (
    "Jomo Kenyatta International Airport", "John F. Kennedy International Airport",
    "Charles de Gaulle Airport", "Ninoy Aquino International Airport",
    "Indira Gandhi International Airport", "Soekarno-Hatta International Airport",
    "Kotoka International Airport", "Blaise Diagne International Airport",
    "Julius Nyerere International Airport", "Robert Gabriel Mugabe International Airport",
    "Chhatrapati Shivaji Maharaj International Airport",
    "Netaji Subhas Chandra Bose International Airport", "Fuaʻamotu International Airport",
    "Nadi International Airport", "Antonio B. Won Pat International Airport",
    "Kigali International Airport", "Ben Gurion Airport", "Queen Alia International Airport",
    "King Khalid International Airport", "Allama Iqbal International Airport",
    "Jinnah International Airport", "Velana International Airport",
    "Paro International Airport", "Tribhuvan International Airport",
    "Sultan Iskandar Muda International Airport", "I Gusti Ngurah Rai International Airport",
    "Presidente Nicolau Lobato International Airport",
    "Alejandro Velasco Astete International Airport", "El Alto International Airport",
    "Silvio Pettirossi International Airport", "Arturo Merino Benítez International Airport",
    "Benito Juárez International Airport", "Toussaint Louverture International Airport",
    "Nelson Mandela International Airport", "Norman Manley International Airport",
    "Wattay International Airport", "Chinggis Khaan International Airport",
    "Manas International Airport", "Shota Rustaveli Tbilisi International Airport",
    "Václav Havel Airport Prague", "Leonardo da Vinci-Fiumicino Airport",
    "John Lennon Airport", "Adolfo Suárez Madrid-Barajas Airport", "Humberto Delgado Airport",
    "Cristiano Ronaldo International Airport", "Bole International Airport",
    "Kenneth Kaunda International Airport", "Sir Seretse Khama International Airport",
)  # fmt: skip
# Streets named after people, then ordinary ones.
PERSON_STREETS = (
    "Martin Luther King Jr. Blvd", "Nelson Mandela Avenue", "Jomo Kenyatta Avenue",
    "Moi Avenue", "Kwame Nkrumah Avenue", "Julius Nyerere Road", "Haile Selassie Avenue",
    "Samora Machel Avenue", "Robert Mugabe Road", "Avenue Cheikh Anta Diop",
    "Boulevard du Général de Gaulle", "Rue Victor Hugo", "Rue Félix Faure", "Karl-Marx-Allee",
    "Friedrich-Ebert-Straße", "Calle Simón Bolívar", "Avenida Benito Juárez",
    "Avenida Getúlio Vargas", "Avenida Eva Perón", "Mahatma Gandhi Road",
    "Netaji Subhash Marg", "Jalan Sudirman", "Jalan Tun Razak", "Jalan Gajah Mada",
    "José Rizal Street", "Osmeña Boulevard", "Avenida Presidente Nicolau Lobato",
    "Pushkin Street", "Shota Rustaveli Avenue", "Mesrop Mashtots Avenue", "Abai Avenue",
    "Chinggis Avenue", "Lê Lợi Street", "Nguyễn Huệ Boulevard", "Sukhumvit Road",
    "Norodom Boulevard", "Sisowath Quay", "Taufaʻāhau Road", "Ratu Sukuna Road",
    "Hobson Street", "Willis Street", "Collins Street", "Todd Street", "Elizabeth Street",
    "George Street", "Baker Street", "Rua Amílcar Cabral", "Avenue John Brown",
    "Boulevard Jean-Jacques Dessalines", "Avenida Francisco Morazán", "Kenneth Kaunda Road",
    "Seretse Khama Avenue", "Rue Patrice Lumumba", "Abdel Nasser Street",
    "Atatürk Bulvarı", "Avenida Pedro de Valdivia", "Calle Túpac Amaru",
)  # fmt: skip
PLAIN_STREETS = (
    "Harbour Road", "Station Road", "Kestrel Lane", "Industrial Area Road", "Rue du Port",
    "Kirkegata", "Strandgade", "Bahnhofstraße", "Calle Mayor", "Rua das Flores",
    "Jalan Merdeka", "Avenue de la Paix", "Ring Road", "Hope Street", "Mill Lane",
    "Ngong Road", "Airport Road", "Marine Parade", "Church Street", "High Street",
    "Avenida del Libertador", "Orchard Road", "Beach Road", "Queen Street", "KN 5 Road",
    "Sunny Bank Road", "Summer Street", "Rose Lane", "Amber Close",
)  # fmt: skip
PERSON_BRANDS = (
    "Ferrari", "Disney", "Dell", "McDonald's", "Mercedes-Benz", "Ford", "Porsche", "Tesla",
    "Dyson", "Boeing", "Chanel", "Gucci", "Prada", "Siemens", "Philips", "Michelin", "Nestlé",
    "Cadbury", "Heinz", "Kellogg's", "Hilton", "Marriott", "Bosch", "Honda", "Toyota",
    "Suzuki", "Tata", "Mahindra", "Bajaj", "Godrej", "Lamborghini", "Citroën", "Peugeot",
    "Renault", "Lidl", "Hermès", "Dior", "Versace", "Armani", "Adidas", "Tim Hortons",
    "Estée Lauder", "Charles Schwab", "Ralph Lauren", "Calvin Klein", "Hugo Boss",
    "Tommy Hilfiger", "Louis Vuitton", "Jack Daniel's", "Johnnie Walker", "Marks & Spencer",
    "Ernst & Young", "Dr. Martens", "Ben & Jerry's", "Wendy's", "Levi Strauss",
    "Morgan Stanley", "Goldman Sachs", "JPMorgan Chase", "Wells Fargo", "Hewlett-Packard",
    "Procter & Gamble", "Johnson & Johnson", "Sainsbury's", "Trader Joe's", "Herman Miller",
    "Dangote", "Walt Disney", "Kempinski", "Oberoi", "Tommy Bahama", "Jimmy Choo",
    "Carolina Herrera", "Paul Smith", "Ted Baker", "Wrigley", "Benetton", "Bulgari",
)  # fmt: skip
OTHER_BRANDS = (
    "Safaricom", "MTN", "Jollibee", "Petronas", "Infosys", "Samsung", "Nokia", "Ikea",
    "Uniqlo", "Huawei", "Xiaomi", "Spotify", "Zara", "Ethio Telecom", "Emirates", "Shopee",
    "Grab", "Gojek", "M-Pesa", "Air Tahiti Nui", "Fiji Airways", "RwandAir", "Digicel",
)  # fmt: skip
PRODUCTS = (
    "iPhone 15", "Galaxy S24", "Kindle Paperwhite", "Echo Dot with Alexa", "Surface Pro",
    "ThinkPad X1", "PlayStation 5", "Nespresso Vertuo", "Ford Ranger", "Toyota Hilux",
    "Mercedes Sprinter", "Dell XPS 13", "Dyson V15", "Ferrari 296 GTB", "Rolex Submariner",
    "Jenkins", "Ruby on Rails", "Apache Kafka", "Siri Shortcuts", "Excel", "Jira",
    "Grafana", "Barbie Dreamhouse", "Big Mac", "Tesla Model Y", "Porsche Taycan",
    "Honda Jazz", "Suzuki Swift", "Mitsubishi Pajero", "Bosch Serie 6",
)  # fmt: skip
DISEASES = (
    "Parkinson's disease", "Alzheimer's disease", "Crohn's disease", "Hodgkin lymphoma",
    "Down syndrome", "Tourette syndrome", "Graves' disease", "Hashimoto's thyroiditis",
    "Bell's palsy", "Addison's disease", "Cushing's syndrome", "Huntington's disease",
    "Guillain-Barré syndrome", "Kawasaki disease", "Ménière's disease",
    "Raynaud's phenomenon", "Sjögren's syndrome", "Wilson's disease", "Tay-Sachs disease",
    "Lou Gehrig's disease", "Paget's disease", "Osgood-Schlatter disease",
    "Dupuytren's contracture", "Marfan syndrome", "Ehlers-Danlos syndrome",
    "Kaposi sarcoma", "Burkitt lymphoma", "Creutzfeldt-Jakob disease", "Behçet's disease",
)  # fmt: skip
EPONYMS = (
    "Newton's second law", "the Doppler effect", "Ohm's law", "Hooke's law", "Boyle's law",
    "Murphy's law", "Moore's law", "the Pareto principle", "a Gantt chart",
    "Dijkstra's algorithm", "a Bloom filter", "a Kalman filter", "the Levenshtein distance",
    "the Turing test", "a Markov chain", "the Nash equilibrium", "the Heimlich manoeuvre",
    "the Richter scale", "the Mohs scale", "a Geiger counter", "a Bunsen burner",
    "a Petri dish", "a Rubik's cube", "the Fibonacci sequence", "a Fourier transform",
    "Bayes' theorem", "the Kelvin scale", "the Coriolis effect", "the Dunning-Kruger effect",
    "Occam's razor", "Pascal's triangle", "a Venn diagram", "Morse code", "a Ponzi scheme",
    "Conway's law", "Brooks's law", "Amdahl's law", "Goodhart's law", "Parkinson's law",
    "Hanlon's razor", "the Apgar score", "the Heimlich maneuver", "a Faraday cage",
    "the Bradford Hill criteria", "the Gini coefficient", "Simpson's paradox", "a Pitot tube",
)  # fmt: skip
HOLIDAYS = (
    "Christmas", "Easter", "Diwali", "Eid al-Fitr", "Eid al-Adha", "Hanukkah",
    "Thanksgiving", "St. Patrick's Day", "Valentine's Day", "Martin Luther King Jr. Day",
    "Columbus Day", "Presidents' Day", "Juneteenth", "Matariki", "Tết", "Lunar New Year",
    "Nowruz", "Vesak", "Guy Fawkes Night", "Boxing Day", "Labour Day", "Anzac Day",
    "Mashujaa Day", "Heroes' Day", "Losar", "Pi Mai", "Hmong New Year", "Inti Raymi",
    "Día de los Muertos", "Mother's Day", "Father's Day", "St. Lucy's Day", "Ólavsøka",
    "Sámi National Day", "Kwanzaa", "Emancipation Day", "Ramadan", "Rosh Hashanah", "Onam",
    "Bihu", "Pongal", "Ugadi", "Vaisakhi", "Holi", "Gudi Padwa", "Sabantuy", "Tsagaan Sar",
    "Naadam", "Obon", "Chuseok", "Good Friday", "All Saints' Day", "Whit Monday",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
JOBS = (
    "Claims Adjuster", "Head of Procurement", "Charge Nurse", "Registrar", "Bursar",
    "Dean of Students", "Site Reliability Engineer", "Accounts Payable Clerk",
    "Chief Operating Officer", "Chief Financial Officer", "Operations Manager",
    "Customer Success Lead", "Solutions Architect", "Paralegal", "Loss Adjuster",
    "Ward Manager", "Dispatch Supervisor", "Head of Sales", "Regional Director",
    "Compliance Officer", "Data Protection Officer", "Junior Developer", "Senior Partner",
    "Company Secretary", "Vice Principal", "Admissions Officer", "Chief Nursing Officer",
    "Fleet Coordinator", "Night Manager", "Procurement Analyst",
)  # fmt: skip
DEPTS = (
    "Human Resources", "Accounts Payable", "Procurement", "Legal", "Facilities",
    "Customer Success", "Site Reliability", "Finance", "Marketing", "Internal Audit",
    "Admissions", "Estates", "Payroll", "Cardiology", "Radiology", "Logistics",
    "Research & Development", "Treasury", "Claims", "Student Services",
)  # fmt: skip
COMPANIES = (
    "Kestrel Freight", "Tallgrass Mutual", "Bluewattle Health", "Ironbark Systems",
    "Saltmarsh Analytics", "Harbourline Logistics", "Redkite Insurance", "Meridian Dental",
    "Copperleaf", "Northgate Clinics", "Silverfern Travel", "Tidewater Holdings",
    "Granite Peak Software", "Lantern Bay", "Juniper Row Studios", "Stonebridge",
    "Coral Reef Ventures", "Baobab Microfinance", "Acacia Couriers", "Mango Tree Foods",
    "Highveld Security", "Lotus Gate Trading", "Andes Textiles", "Volcano Coffee Roasters",
    "Sandstone Property", "Monsoon Media", "Crescent Pharmacy", "Polar Star Shipping",
    "Blue Lagoon Resorts", "Tamarind Foods", "Fernleaf", "Umoja Solar", "Kōwhai Digital",
)  # fmt: skip
LAW_FIRMS = (
    "Baker McKenzie", "Clifford Chance", "Allen & Overy", "Slaughter and May",
    "Herbert Smith Freehills", "Norton Rose Fulbright", "Freshfields Bruckhaus Deringer",
    "Bowmans", "Anjarwalla & Khanna", "Cyril Amarchand Mangaldas", "Khaitan & Co",
    "Bentsi-Enchill, Letsa & Ankomah", "Aluko & Oyebode", "Rajah & Tann", "Drew & Napier",
    "Simpson Grierson", "Chapman Tripp", "Russell McVeagh", "Gilbert + Tobin",
    "King & Wood Mallesons", "Uría Menéndez", "Garrigues", "Cuatrecasas",
    "Gide Loyrette Nouel", "De Brauw Blackstone Westbroek", "Loyens & Loeff",
    "Mannheimer Swartling", "Wiersholm", "Kromann Reumert",
)  # fmt: skip
HOTELS = (
    "the Ritz-Carlton", "Raffles Hotel", "Hilton Garden Inn", "Courtyard by Marriott",
    "Four Seasons", "Shangri-La", "Mandarin Oriental", "Radisson Blu", "Sheraton", "Sofitel",
    "Novotel", "Holiday Inn Express", "Best Western", "Hyatt Regency", "Kempinski",
    "Fairmont", "The Oberoi", "Serena Hotel", "Mövenpick", "Premier Inn",
)  # fmt: skip
VESSELS = (
    "MSC Isabella", "CMA CGM Marco Polo", "Ever Given", "Emma Mærsk", "MOL Triumph",
    "ONE Apus", "Cosco Shipping Aries", "Queen Mary 2", "MSC Gülsün", "Madrid Mærsk",
)  # fmt: skip
LOGISTICS = (
    "Kuehne+Nagel", "DB Schenker", "Bolloré Logistics", "A.P. Moller-Maersk", "DHL",
    "FedEx", "UPS", "Aramex", "CEVA", "Hapag-Lloyd", "DSV", "Nippon Express", "Yamato",
    "Toll Group", "Expeditors",
)  # fmt: skip
BICS = (
    "NWBKGB2L", "DEUTDEFF", "BNPAFRPP", "ABNANL2A", "INGBNL2A", "BARCGB22", "HBUKGB4B",
    "COBADEFF", "UNCRITMM", "BSCHESMM", "BCMAMAMC", "KCBLKENX", "BKIGRWRW", "ECOCSNDA",
)  # fmt: skip
PERSON_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.fr", "proton.me", "icloud.com", "hotmail.co.uk",
    "kestrelfreight.co.nz", "tallgrass-mutual.com", "bluewattle.health", "ironbark.io",
    "harbourline.com.au", "copperleafbank.co.ke", "silverfern.travel", "baobab-mf.rw",
    "acacia-couriers.sn", "monsoon.media", "crescentpharmacy.ae", "lotusgate.com.sg",
    "andestextiles.pe", "umojasolar.co.tz", "fernleaf.fj", "uni-mindelo.edu.cv",
    "redkite.co.za", "polarstar.no", "tamarind.com.my", "granitepeak.dev",
)  # fmt: skip
ROLE_EMAILS = (
    "claims", "noreply", "servicedesk", "hr", "payroll", "admissions", "bookings", "support",
    "info", "accounts", "security", "frontdesk", "appointments", "dispatch",
)  # fmt: skip
CURRENCIES = ("€", "USD ", "KES ", "NZ$", "₹", "RWF ", "GBP ", "A$", "FJD ", "MXN ", "CHF ")
FLIGHTS = ("KQ", "ET", "TG", "WB", "FJ", "NZ", "PR", "GA", "MK", "TK", "QR", "LA", "CM")

GENERIC_TITLES = {
    "m": (("Mr", 10), ("Mr.", 8), ("Dr.", 6), ("Dr", 3), ("Prof.", 3), ("Rev.", 1), ("Hon.", 1),
          ("Sir", 1), ("Mx", 1)),
    "f": (("Ms", 9), ("Ms.", 5), ("Mrs", 4), ("Mrs.", 3), ("Miss", 1), ("Dr.", 6), ("Dr", 3),
          ("Prof.", 3), ("Rev.", 1), ("Hon.", 1), ("Dame", 1), ("Mx", 1)),
}  # fmt: skip
DEGREES = (
    "PhD", "MD", "MBA", "CPA", "RN", "MSc", "Esq.", "DDS", "CFA", "FRCS", "FCA", "MPH", "LLM",
    "PE", "DPhil", "OBE", "MBE", "KC", "BSc", "FRCP", "MRCP", "EdD",
)  # fmt: skip
GEN_SUFFIXES = ("Jr.", "Jr", "Sr.", "II", "III", "IV")

_FOLD = str.maketrans(
    {"ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ð": "d", "Ð": "D", "þ": "th",
     "Þ": "Th", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i", "œ": "oe", "Œ": "OE",
     "ʻ": "'", "ʼ": "'", "’": "'"}
)  # fmt: skip


def fold(text: str) -> str:
    """ASCII spelling of a name, as forms and airline systems write it."""
    text = text.translate(_FOLD)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


# ------------------------------------------------------------------------------- patterns

PHONE_REGIONS = (
    "US", "CA", "GB", "IE", "FR", "DE", "NL", "BE", "CH", "AT", "ES", "PT", "IT", "SE", "NO",
    "DK", "FI", "IS", "FO", "PL", "CZ", "RU", "UA", "RS", "GR", "MT", "TR", "IL", "AE", "SA",
    "EG", "MA", "DZ", "TN", "NG", "GH", "KE", "TZ", "RW", "BI", "ET", "SN", "ML", "ZW", "BW",
    "ZA", "SS", "SO", "IN", "PK", "BD", "LK", "NP", "MV", "BT", "CN", "HK", "TW", "JP", "KR",
    "MN", "SG", "MY", "ID", "PH", "TH", "VN", "KH", "LA", "MM", "TL", "AU", "NZ", "FJ", "TO",
    "WS", "GU", "BR", "AR", "CL", "PE", "BO", "PY", "MX", "CO", "HN", "BZ", "HT", "CV", "JM",
    "KG", "TJ", "TM", "KZ", "UZ", "GE", "AM", "IR",
)  # fmt: skip
_PHONE_FORMATS = (
    (phonenumbers.PhoneNumberFormat.NATIONAL, "national", 4),
    (phonenumbers.PhoneNumberFormat.INTERNATIONAL, "international", 4),
    (phonenumbers.PhoneNumberFormat.E164, "e164", 2),
)


@functools.cache
def phone_pool() -> tuple[tuple[str, str, tuple[str, str, str]], ...]:
    """Valid numbers varied from phonenumbers' example numbers: (region, type, (national,
    international, E.164)). Made once, region by region (phonenumbers' patterns stay cached)."""
    pool = []
    types = (("mobile", phonenumbers.PhoneNumberType.MOBILE), ("fixed", phonenumbers.PhoneNumberType.FIXED_LINE))
    for region in PHONE_REGIONS:
        for type_name, ptype in types:
            example = phonenumbers.example_number_for_type(region, ptype)
            if example is None:
                continue
            rng = random.Random(f"{region}/{type_name}")
            nsn = str(example.national_number)
            keep = max(len(nsn) - 4, 3)
            found: list[phonenumbers.PhoneNumber] = []
            for _ in range(80):
                candidate = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
                trial = phonenumbers.PhoneNumber()
                trial.merge_from(example)
                trial.national_number = int(candidate)
                if (
                    candidate != nsn
                    and all(candidate != str(f.national_number) for f in found)
                    and phonenumbers.is_valid_number(trial)
                    and phonenumbers.region_code_for_number(trial) == region
                ):
                    found.append(trial)
                    if len(found) == 6:
                        break
            for number in found or [example]:
                forms = tuple(phonenumbers.format_number(number, fmt) for fmt, _, _ in _PHONE_FORMATS)
                pool.append((region, type_name, forms))
    return tuple(pool)


def make_phone(rng: random.Random) -> tuple[str, str, str]:
    """A valid number of a random region, in national, international or E.164 form."""
    region = rng.choice(PHONE_REGIONS)
    choices = [forms for r, _, forms in phone_pool() if r == region]
    forms = rng.choice(choices)
    which = rng.choices(range(3), weights=[w for *_, w in _PHONE_FORMATS])[0]
    return forms[which], region, _PHONE_FORMATS[which][1]


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    digits = [c for c in number if c.isdigit()]
    return _luhn_digit("".join(digits[:-1])) == digits[-1]


_CARD_PREFIXES = (
    (("4",), 16), (("51", "52", "53", "54", "55"), 16), (("2221", "2304", "2511", "2720"), 16),
    (("34", "37"), 15), (("6011", "644", "65"), 16), (("3528", "3541", "3589"), 16),
    (("36", "300", "305"), 14), (("62",), 16),
)  # fmt: skip


def make_card(rng: random.Random) -> str:
    prefixes, length = rng.choice(_CARD_PREFIXES)
    body = rng.choice(prefixes)
    body += "".join(rng.choice("0123456789") for _ in range(length - 1 - len(body)))
    digits = body + _luhn_digit(body)
    sep = rng.choice((" ", " ", "-", ""))
    if length == 16:
        groups = [digits[i : i + 4] for i in range(0, 16, 4)]
    elif length == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[:4], digits[4:10], digits[10:]]
    return sep.join(groups)


# BBAN layouts: n digits, a upper-case letters, c letters or digits.
_IBAN_SPECS = {
    "DE": "18n", "GB": "4a14n", "FR": "10n11c2n", "NL": "4a10n", "ES": "20n", "IT": "1a10n12c",
    "BE": "12n", "CH": "5n12c", "AT": "16n", "PL": "24n", "SE": "20n", "NO": "11n",
    "DK": "14n", "FI": "14n", "IE": "4a14n", "PT": "21n", "LU": "3n13c", "MT": "4a5n18c",
    "SA": "2n18c", "AE": "3n16n", "TR": "5n1n16c", "GR": "7n16c", "CY": "8n16c", "HR": "17n",
    "RO": "4a16c", "BG": "4a6n8c", "CZ": "20n", "SK": "20n", "HU": "24n", "SI": "15n",
    "EE": "16n", "LT": "16n", "LV": "4a13c", "IS": "22n", "FO": "14n", "TN": "20n",
    "MR": "23n", "MU": "4a19n3a", "JO": "4a4n18c", "KW": "4a22c", "QA": "4a21c",
    "PK": "4a16c", "IL": "19n", "EG": "25n", "GE": "2a16n", "BR": "23n1a1c",
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def make_iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_IBAN_SPECS))
    bban = ""
    for count, kind in re.findall(r"(\d+)([nac])", _IBAN_SPECS[country]):
        for _ in range(int(count)):
            if kind == "n":
                bban += rng.choice("0123456789")
            elif kind == "a":
                bban += rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            else:
                bban += rng.choice("0123456789" * 3 + "ABCDEFGHJKLMNPRSTUVWXYZ")
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    iban = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def make_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    group = rng.randint(1, 99)
    serial = rng.randint(1, 9999)
    sep = rng.choices(("-", " ", ""), weights=(7, 2, 1))[0]
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


_V4_BLOCKS = ("10", "172", "192", "41", "102", "196", "103", "180", "186", "200", "5", "31", "85", "91", "145")


def make_ipv4(rng: random.Random) -> str:
    first = rng.choice(_V4_BLOCKS)
    if first == "172":
        return f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if first == "192":
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


_V6_PREFIXES = ("2001:db8", "2a02:c7f", "2c0f:fb50", "2400:cb00", "2800:3f0", "2a01:4f8", "2001:41d0", "fe80:0")


def make_ipv6(rng: random.Random) -> str:
    head = rng.choice(_V6_PREFIXES).split(":")
    groups = [int(h, 16) for h in head]
    shape = rng.random()
    for i in range(len(groups), 8):
        if shape < 0.5 and i in (3, 4, 5):
            groups.append(0)
        else:
            groups.append(rng.randint(0, 0xFFFF) if rng.random() < 0.8 else rng.randint(0, 0xFF))
    addr = ipaddress.IPv6Address(sum(g << (16 * (7 - i)) for i, g in enumerate(groups)))
    return addr.exploded if rng.random() < 0.15 else addr.compressed


# -------------------------------------------------------------------------------- rendering

Piece = tuple[str, str | None]  # text, gold label (None: not labeled)


@dataclass
class _Stats:
    forms: Counter[str] = field(default_factory=Counter)
    phone_regions: Counter[str] = field(default_factory=Counter)
    phone_formats: Counter[str] = field(default_factory=Counter)
    people: Counter[int] = field(default_factory=Counter)
    trap_texts: int = 0
    name_like_trap_texts: int = 0
    trap_kinds: Counter[str] = field(default_factory=Counter)
    styles: Counter[str] = field(default_factory=Counter)


class _Text:
    """Renders one template: the people of a text keep their title, order, e-mail..."""

    def __init__(self, rng: random.Random, people: list[Person], stats: _Stats) -> None:
        self.rng = rng
        self.people = people
        self.stats = stats
        self.cache: dict[tuple[int, str], str] = {}
        self.traps: set[str] = set()

    def _once(self, idx: int, key: str, make: object) -> str:
        if (idx, key) not in self.cache:
            self.cache[(idx, key)] = make()  # type: ignore[operator]
        return self.cache[(idx, key)]

    # ---- name parts
    def title(self, idx: int) -> str:
        p = self.people[idx]

        def pick() -> str:
            if p.titles and self.rng.random() < 0.4:
                return self.rng.choice(p.titles)
            names, weights = zip(*GENERIC_TITLES[p.gender], strict=True)
            return self.rng.choices(names, weights=weights)[0]

        return self._once(idx, "title", pick)

    def full(self, idx: int) -> str:
        p = self.people[idx]
        if not p.family:
            return p.given
        order = p.order
        if order == "FG" and p.alt:
            order = self._once(idx, "order", lambda: "GF" if self.rng.random() < 0.3 else "FG")
        name = f"{p.family} {p.given}" if order == "FG" else f"{p.given} {p.family}"
        # forms and older systems drop diacritics: consistently for one person in one text
        if self._once(idx, "ascii", lambda: "y" if self.rng.random() < 0.12 else "n") == "y":
            return fold(name)
        return name

    def first(self, idx: int) -> str:
        return self.people[idx].short

    def last(self, idx: int) -> str:
        p = self.people[idx]
        return p.short if p.nosur else p.family

    def formal(self, idx: int) -> str:
        p = self.people[idx]
        if p.hon and self.rng.random() < 0.5:
            base = p.short if p.hon_given else p.family
            return f"{base}{p.hon}" if p.hon.startswith("-") else f"{base} {p.hon}"
        if p.addr_given or (p.nosur and p.family):
            return f"{self.title(idx)} {p.short}"
        if not p.family:
            return f"{self.title(idx)} {p.given}"
        return f"{self.title(idx)} {p.family}"

    def post(self, idx: int) -> str:
        p = self.people[idx]
        if p.suffix_ok and self.rng.random() < 0.5:
            return f"{self.full(idx)}{self.rng.choice((' ', ' ', ', '))}{self.rng.choice(GEN_SUFFIXES)}"
        degree = self.rng.choice(DEGREES)
        if self.rng.random() < 0.12:
            degree += ", " + self.rng.choice([d for d in DEGREES if d != degree])
        return f"{self.full(idx)}{self.rng.choice((', ', ', ', ' '))}{degree}"

    def initials(self, idx: int) -> str:
        p = self.people[idx]
        if p.nosur:
            return self.full(idx)

        def initial(token: str) -> str:
            parts = [t for t in token.split("-") if t]
            letters = [next((c for c in t if c.isalpha()), t[0]) + "." for t in parts]
            return "-".join(letters)

        if p.patron_init:
            return f"{initial(p.family)} {p.given}"
        tokens = [initial(t) for t in p.given.split() if not t[0].islower()]
        joiner = "" if self.rng.random() < 0.3 else " "
        return f"{joiner.join(tokens)} {p.family}"

    def sg(self, idx: int) -> str:
        p = self.people[idx]
        if p.nosur:
            return self.full(idx)
        family = p.family.upper() if self.rng.random() < 0.5 else p.family
        return f"{family}, {p.given}"

    def pnr(self, idx: int) -> str:
        p = self.people[idx]
        family = p.family if p.family else p.given.split()[-1]
        given = p.given if p.family else " ".join(p.given.split()[:-1]) or p.given

        def squash(s: str) -> str:
            return re.sub(r"[^A-Z]", "", fold(s).upper())

        titles = ("MR", "MR", "DR") if p.gender == "m" else ("MS", "MRS", "MS", "DR")
        title = self.rng.choice(titles)
        return f"{squash(family)}/{squash(given)} {title}"

    def fi(self, idx: int) -> str:
        p = self.people[idx]
        if not p.family or p.nosur:
            return p.short
        last = p.family.split()[-1]
        letter = next((c for c in last if c.isalpha()), last[0]).upper()
        return f"{p.short} {letter}."

    def email(self, idx: int) -> str:
        def make() -> str:
            p = self.people[idx]

            def clean(s: str) -> str:
                return re.sub(r"[^a-z0-9]", "", fold(s).lower())

            given_tokens = p.given.split()
            g = clean(p.short) or clean(p.given)
            fam = [t for t in p.family.split() if t.lower() not in ("bin", "binti", "bint", "ibn")]
            f = clean("".join(fam)) if fam else clean(given_tokens[-1])
            pattern = self.rng.randrange(7)
            local = (
                f"{g}.{f}",
                f"{g[0]}.{f}",
                f"{g}{f}",
                f"{f}.{g}",
                f"{g}_{f}",
                f"{g}{self.rng.randint(1, 99)}",
                f"{f}{g[0]}",
            )[pattern]
            return f"{local}@{self.rng.choice(PERSON_DOMAINS)}"

        return self._once(idx, "email", make)

    # ---- forms
    def person(self, idx: int, form: str) -> list[Piece]:
        rng = self.rng
        if form in ("", "any"):
            options = ["full", "full", "full", "titled", "formal", "first", "post", "init", "last"]
            if fold(self.full(idx)) != self.full(idx):
                options.append("ascii")
            form = rng.choice([*options, "caps", "lower"] if rng.random() < 0.08 else options)
        if form.endswith("poss"):
            base = form[: -len("poss")] or "any"
            pieces = self.person(idx, base)
            return [*pieces, ("’s" if rng.random() < 0.2 else "'s", None)]
        if form == "chat":
            form = self._once(idx, "chat", lambda: rng.choice(("first", "first", "full", "lower", "lfirst")))
        if form == "sign":
            form = self._once(idx, "sign", lambda: rng.choice(("full", "full", "titled", "post", "first")))
        if form == "email":
            return [(self.email(idx), "EMAIL_ADDRESS")]
        self.stats.forms[form if not form.startswith("as_") else "as_title"] += 1
        if form == "full":
            text = self.full(idx)
        elif form == "first":
            text = self.first(idx)
        elif form == "lfirst":
            text = self.first(idx).lower()
        elif form == "last":
            text = self.last(idx)
        elif form == "formal":
            text = self.formal(idx)
        elif form == "titled":
            text = f"{self.title(idx)} {self.full(idx)}"
        elif form == "post":
            text = self.post(idx)
        elif form == "init":
            text = self.initials(idx)
        elif form == "sg":
            text = self.sg(idx)
        elif form == "caps":
            text = self.full(idx).upper()
        elif form == "lower":
            text = self.full(idx).lower()
        elif form == "ascii":
            text = fold(self.full(idx))
        elif form == "pnr":
            text = self.pnr(idx)
        elif form == "fi":
            text = self.fi(idx)
        elif form == "gn":
            text = self.people[idx].given
        elif form == "fn":
            text = self.people[idx].family
            if not text:
                return []
        elif form.startswith("as_"):
            text = f"{form[3:].replace('_', ' ')} {self.last(idx)}"
        else:
            raise ValueError(f"unknown person form {form!r}")
        return [(text, "PERSON")]

    def filler(self, key: str, form: str) -> list[Piece]:
        pieces = self._filler(key, form)
        kind = TRAP_KIND.get(key)
        value = pieces[-1][0]
        if kind == "place" and (value in PERSON_LIKE_CITIES + PERSON_STREETS + PERSON_LANDMARKS):
            kind = "name_like_place"
        if key == "airport" and value in PLACE_AIRPORTS:
            kind = "place"
        if key == "co":
            kind = None  # the fictional companies carry no names
        if kind:
            self.traps.add(kind)
        return pieces

    def _filler(self, key: str, form: str) -> list[Piece]:
        rng = self.rng
        if key == "phone":
            value, region, fmt = make_phone(rng)
            self.stats.phone_regions[region] += 1
            self.stats.phone_formats[fmt] += 1
            return [(value, "PHONE_NUMBER")]
        simple_labeled = {
            "email": lambda: f"{rng.choice(ROLE_EMAILS)}@{rng.choice(PERSON_DOMAINS[6:])}",
            "card": lambda: make_card(rng),
            "iban": lambda: make_iban(rng),
            "ssn": lambda: make_ssn(rng),
            "ip": lambda: make_ipv4(rng),
            "ip6": lambda: make_ipv6(rng),
        }
        labels = {"email": "EMAIL_ADDRESS", "card": "CREDIT_CARD", "iban": "IBAN_CODE", "ssn": "US_SSN"}
        if key in simple_labeled:
            return [(simple_labeled[key](), labels.get(key, "IP_ADDRESS"))]
        locations = {
            "city": lambda: rng.choice(CITIES) if rng.random() < 0.85 else rng.choice(PERSON_LIKE_CITIES),
            "pcity": lambda: rng.choice(PERSON_LIKE_CITIES),
            "country": lambda: rng.choice(COUNTRIES),
            "region": lambda: rng.choice(REGIONS),
            "landmark": lambda: rng.choice(LANDMARKS),
            "airport": lambda: rng.choice(AIRPORTS),
            "street": lambda: rng.choice(PERSON_STREETS) if rng.random() < 0.5 else rng.choice(PLAIN_STREETS),
            "pstreet": lambda: rng.choice(PERSON_STREETS),
        }
        if key in locations:
            value = locations[key]()
            if value.startswith("the ") and form != "keep":
                # "the" stays outside the span: "near the Eiffel Tower"
                return [("the ", None), (value[4:], "LOCATION")]
            return [(value, "LOCATION")]
        plain = {
            "brand": lambda: rng.choice(PERSON_BRANDS) if rng.random() < 0.7 else rng.choice(OTHER_BRANDS),
            "pbrand": lambda: rng.choice(PERSON_BRANDS),
            "product": lambda: rng.choice(PRODUCTS),
            "disease": lambda: rng.choice(DISEASES),
            "eponym": lambda: rng.choice(EPONYMS),
            "holiday": lambda: rng.choice(HOLIDAYS),
            "day": lambda: rng.choice(DAYS),
            "month": lambda: rng.choice(MONTHS),
            "date": self._date,
            "iso": lambda: (
                f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
            ),
            "time": lambda: f"{rng.randint(6, 22):02d}:{rng.choice(('00', '15', '30', '45', '05', '50', '12'))}",
            "job": lambda: rng.choice(JOBS),
            "dept": lambda: rng.choice(DEPTS),
            "co": lambda: rng.choice(COMPANIES),
            "firm": lambda: rng.choice(LAW_FIRMS),
            "hotel": lambda: rng.choice(HOTELS),
            "vessel": lambda: rng.choice(VESSELS),
            "logi": lambda: rng.choice(LOGISTICS),
            "bic": lambda: rng.choice(BICS),
            "num": lambda: str(rng.randint(2, 480)),
            "num4": lambda: f"{rng.randint(0, 9999):04d}",
            "age": lambda: str(rng.randint(19, 94)),
            "ref": self._ref,
            "amount": self._amount,
            "flight": lambda: f"{rng.choice(FLIGHTS)} {rng.randint(11, 989)}",
            "domain": lambda: rng.choice(PERSON_DOMAINS[6:]),
        }
        if key in plain:
            return [(plain[key](), None)]
        raise ValueError(f"unknown placeholder {key!r}")

    def _date(self) -> str:
        rng = self.rng
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.choice((2024, 2025, 2026))
        name = MONTHS[month - 1]
        return rng.choice(
            (
                f"{day} {name} {year}",
                f"{name} {day}, {year}",
                f"{year}-{month:02d}-{day:02d}",
                f"{day:02d}/{month:02d}/{year}",
                f"{day} {name[:3]} {year}",
            )
        )

    def _ref(self) -> str:
        rng = self.rng
        prefix = rng.choice(("CLM", "INV", "BK", "KF", "REF", "CASE", "PO", "TKT", "ORD", "AWB"))
        letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
        return rng.choice((f"{prefix}-{rng.randint(1000, 99999)}", f"{prefix}/{letters}{rng.randint(100, 9999)}"))

    def _amount(self) -> str:
        rng = self.rng
        value = rng.randint(20, 250_000)
        cents = f".{rng.randint(0, 99):02d}" if rng.random() < 0.4 else ""
        return f"{rng.choice(CURRENCIES)}{value:,}{cents}"


def _render(template: Template, rng: random.Random, people: list[Person], stats: _Stats) -> tuple[Sample, list[str]]:
    text = _Text(rng, people, stats)
    pieces: list[Piece] = []
    pos = 0
    for m in _PH.finditer(template.body):
        pieces.append((template.body[pos : m.start()], None))
        key, form = m.group(1), m.group(2) or ""
        if re.fullmatch(r"p[1-9]", key):
            pieces.extend(text.person(int(key[1:]) - 1, form))
        else:
            pieces.extend(text.filler(key, form))
        pos = m.end()
    pieces.append((template.body[pos:], None))
    out: list[str] = []
    spans: list[GoldSpan] = []
    values: list[str] = []
    length = 0
    for value, label in pieces:
        if template.transform == "upper":
            value = value.upper()
        elif template.transform == "lower":
            value = value.lower()
        if label is not None:
            spans.append(GoldSpan(label, length, length + len(value)))
            values.append(value)
        out.append(value)
        length += len(value)
    traps = text.traps | set(template.literal_traps)
    for kind in traps:
        stats.trap_kinds[kind] += 1
    stats.trap_texts += any(k in PRECISION_TRAPS for k in traps)
    stats.name_like_trap_texts += any(k in NAME_LIKE_TRAPS for k in traps)
    return Sample("".join(out), spans, f"unseen/{template.style}"), values


def _build(seed: int) -> tuple[list[Sample], _Stats, list[Person]]:
    rng = random.Random(seed)
    people = load_people()
    templates = load_templates()
    stats = _Stats()
    deck: list[int] = []
    order: list[Template] = []
    samples: list[Sample] = []
    while len(samples) < N_TEXTS:
        if not order:
            order = list(templates)
            rng.shuffle(order)
        template = order.pop()
        wanted = max((int(k[1:]) for k in re.findall(r"\{\{(p[1-9])", template.body)), default=0)
        chosen: list[int] = []
        while len(chosen) < wanted:
            if not deck:
                deck = list(range(len(people)))
                rng.shuffle(deck)
            idx = deck.pop()
            if idx not in chosen:
                chosen.append(idx)
        for idx in chosen:
            stats.people[idx] += 1
        sample, values = _render(template, rng, [people[i] for i in chosen], stats)
        check_sample(sample, values)
        stats.styles[template.style] += 1
        samples.append(sample)
    return samples, stats, people


def check_sample(sample: Sample, values: list[str] | None = None) -> None:
    """Every span is in range, non-empty, trimmed, of a known type, and spans don't overlap."""
    end = 0
    for i, span in enumerate(sorted(sample.spans, key=lambda s: (s.start, s.end))):
        value = sample.text[span.start : span.end]
        assert span.entity_type in TYPES, span
        assert 0 <= span.start < span.end <= len(sample.text), (span, sample.text)
        assert value, span
        assert value == value.strip(), (span, value)
        assert span.start >= end, ("overlap", span, sample.text)
        if values is not None:
            assert value == values[i], (value, values[i])
        end = span.end


_PARTICLE = re.compile(
    r"(^|[\s/])(van|von|de|der|den|del|da|di|do|dos|du|d'|ten|op|ter|zu|bin|binti|bint|ibn|al|Al|"
    r"Ní|Nic|Ó|Mac|Mc|ap|á|í|við|Le|La|Lo|Di|Dell'|D'|San|Te|Ni|I)\b"
)


def name_features(names: list[str]) -> Counter[str]:
    """How many written names show each hard feature (for the printed summary)."""
    titles = {t for pairs in GENERIC_TITLES.values() for t, _ in pairs}
    titles |= {t for p in load_people() for t in p.titles} | {"Cllr"}
    out: Counter[str] = Counter()
    for name in names:
        if name.split(" ")[0] in titles or name.startswith(("Tan Sri ", "Dr.-Ing. ", "El Hadj ")):
            out["title"] += 1
        if any(re.search(rf"[ ,]{re.escape(pn)}$", name) for pn in DEGREES + GEN_SUFFIXES):
            out["post_nominal"] += 1
        if any(ord(c) > 127 and c.isalpha() for c in name):
            out["diacritics"] += 1
        if "-" in name:
            out["hyphen"] += 1
        if "'" in name or "ʻ" in name:
            out["apostrophe_okina"] += 1
        if _PARTICLE.search(name):
            out["particle"] += 1
        if re.search(r"\b[A-Z]\.", name):
            out["initials"] += 1
        if name.isupper():
            out["all_caps"] += 1
        if name.islower():
            out["lowercase"] += 1
        if ", " in name and name.split(",")[0].strip().split()[-1][:1].isupper() and "/" not in name:
            out["surname_comma_given"] += 1
        if " " not in name:
            out["single_word"] += 1
    return out


def build_unseen_corpus(seed: int = 9090) -> list[Sample]:
    """About 1,500 labeled texts (deterministic for a seed, offline)."""
    return _build(seed)[0]


def main() -> None:
    samples, stats, people = _build(9090)
    for sample in samples:
        check_sample(sample)
    # re-check the pattern values against their own validity rules
    for sample in samples:
        for span in sample.spans:
            value = sample.text[span.start : span.end]
            if span.entity_type == "CREDIT_CARD":
                assert luhn_ok(value), value
            elif span.entity_type == "IBAN_CODE":
                assert iban_ok(value), value
            elif span.entity_type == "PHONE_NUMBER" and value.startswith("+"):
                assert phonenumbers.is_valid_number(phonenumbers.parse(value)), value
            elif span.entity_type == "IP_ADDRESS":
                ipaddress.ip_address(value)
    assert samples == build_unseen_corpus(9090), "not deterministic"
    types = Counter(s.entity_type for sample in samples for s in sample.spans)
    used = [people[i] for i in sorted(stats.people)]
    groups = Counter(p.group for p in used)
    mentions = Counter()
    for idx, n in stats.people.items():
        mentions[people[idx].group] += n
    cultures = Counter(p.culture for p in used)
    outside = sum(1 for p in used if p.group not in WESTERN_GROUPS)
    w = sys.stdout.write
    w(f"texts: {len(samples)}   templates: {len(load_templates())}   spans: {sum(types.values())}\n")
    w("spans per type:\n")
    for t in TYPES:
        w(f"  {t:<14} {types[t]:>6}\n")
    w(f"distinct people used: {len(used)} of {len(people)}, cultures: {len(cultures)}, "
      f"outside typical Western lists: {outside} ({outside / len(used):.0%})\n")  # fmt: skip
    w("people per culture group (distinct / mentions):\n")
    for g, n in sorted(groups.items(), key=lambda kv: -kv[1]):
        w(f"  {g:<20} {n:>5} {mentions[g]:>6}\n")
    w("texts per style:\n")
    for s, n in sorted(stats.styles.items()):
        w(f"  {s:<14} {n:>5}\n")
    n = len(samples)
    w(f"texts with precision traps: {stats.trap_texts} ({stats.trap_texts / n:.0%}); with name-like "
      f"traps (eponymous brands, places, diseases, laws, holidays, name words): "
      f"{stats.name_like_trap_texts} ({stats.name_like_trap_texts / n:.0%})\n")  # fmt: skip
    w(f"trap kinds (texts): {dict(stats.trap_kinds.most_common())}\n")
    w(f"name forms: {dict(stats.forms.most_common())}\n")
    names = [sample.text[s.start : s.end] for sample in samples for s in sample.spans if s.entity_type == "PERSON"]
    w(f"PERSON spans with: {dict(name_features(names))}\n")
    w(f"phone regions: {len(stats.phone_regions)}, formats: {dict(stats.phone_formats)}\n")
    rng = random.Random(1)
    for sample in rng.sample(samples, 4):
        w(f"\n--- {sample.source}\n{sample.text}\n")
        for span in sample.spans:
            w(f"  [{span.entity_type}] {sample.text[span.start : span.end]!r}\n")


if __name__ == "__main__":
    main()
