"""A tiny corpus for the retriever and client tests: three chunks a clearance-2 reader may see
and one secret one (access level 4) that matches the test question too."""

from __future__ import annotations

from osprag import KnowledgeBase, Principal

QUESTION = "Wie hoch ist die Crimphöhe bei 0,35 mm²?"
READER = Principal("qm-app", clearance=2)
SECRET_ID = "k-secret"
SECRET_TEXT = (
    "Vertraulich: Reklamation Kunde Nordwerk, Crimphöhe bei 0,35 mm² außerhalb der Toleranz, "
    "Sonderfreigabe 0,35 mm² Crimphöhe 0,80 mm bis Kalenderwoche 12."
)
CRIMP_TEXT = "Die Crimphöhe bei 0,35 mm² beträgt 0,80 mm ± 0,03 mm; Prüfung mit Mikrometer."


def fill(kb: KnowledgeBase) -> None:
    kb.add(
        "kern",
        [CRIMP_TEXT, "Der 8D-Bericht ist binnen 24 Stunden nach Reklamation zu eröffnen.",
         SECRET_TEXT],
        ids=["k-crimp", "k-8d", SECRET_ID],
        metadatas=[
            {"access_level": 1, "source": "AA-Crimp.pdf", "page": 3,
             "section": "4.2 Crimphöhe", "version": "2.1", "doc_type": "work_instruction"},
            {"access_level": 2, "source": "8D-Leitfaden.docx", "section": "1 Ablauf"},
            {"access_level": 4, "source": "Reklamation-Nordwerk.pdf", "page": 1},
        ],
    )
    kb.add(
        "erweitert",
        ["VDA Band 6.3: Prozessaudit, Crimpverbindungen und Crimphöhe im Fragenkatalog."],
        ids=["e-vda"],
        metadatas=[{"access_level": 2, "source": "VDA-6.3.pdf", "page": 41}],
    )
