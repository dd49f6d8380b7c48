"""The main job on the embedded default: fill both layers with a few QM passages and ask.

Run by `make run` (idempotent: records are upserted under stable ids).
"""

from __future__ import annotations

import sys

from osprag import KnowledgeBase, Principal, load_settings

KERN = {
    "kern-crimp-1": (
        "Produktionslenkungsplan Crimpen: Die Crimphöhe für 0,35 mm² beträgt "
        "0,80 ± 0,03 mm, für 0,5 mm² 0,90 ± 0,03 mm; Prüfung bei Losbeginn, "
        "nach Werkzeugwechsel und stündlich.",
        {
            "access_level": 2,
            "version": "3.0",
            "doc_type": "control_plan",
            "source": "kern/PRD_CRM_Lenkungsplan.md",
        },
    ),
    "kern-pull-1": (
        "Auszugskraftprüfung: Mindestauszugskraft 0,35 mm² ≥ 50 N, 0,5 mm² ≥ 70 N, "
        "1,0 mm² ≥ 108 N, 2,5 mm² ≥ 230 N. Bei n.i.O. Los sperren und 8D eröffnen.",
        {
            "access_level": 2,
            "version": "2.2",
            "doc_type": "work_instruction",
            "source": "kern/PRD_CRM_Auszugskraft.md",
        },
    ),
    "kern-8d-1": (
        "Reklamationsprozess: D3 Sofortmaßnahmen innerhalb von 24 Stunden, D4 "
        "Ursachenanalyse innerhalb von 10 Arbeitstagen, 8D-Abschluss nach "
        "Wirksamkeitsnachweis.",
        {
            "access_level": 3,
            "version": "1.4",
            "doc_type": "process",
            "source": "kern/QM_REK_8D-Prozess.md",
        },
    ),
    "kern-kosten-1": (
        "Reklamationskosten 2025 je Kunde und interne Verrechnungssätze (vertraulich).",
        {"access_level": 4, "source": "kern/QM_REK_Kosten.md"},
    ),
}
ERWEITERT = {
    "erw-vda63-1": (
        "VDA 6.3 Prozessaudit: Prozesselement P6 bewertet die Serienfertigung. "
        "Erfüllungsgrad ≥ 90 % ergibt Einstufung A, 80–90 % B, unter 80 % C.",
        {"access_level": 1, "source": "erweitert/VDA_63_Prozessaudit.md"},
    ),
    "erw-iatf-1": (
        "IATF 16949 8.5.1.1: A control plan is required at system, subsystem, "
        "component and material level for each manufacturing site.",
        {"access_level": 1, "language": "en", "source": "erweitert/IATF_851_Notes.md"},
    ),
    "erw-msa-1": (
        "Messsystemanalyse: %GRR unter 10 % ist fähig, 10–30 % bedingt fähig, über "
        "30 % nicht fähig.",
        {"access_level": 2, "source": "erweitert/QM_MSA_Leitfaden.md"},
    ),
}


def main() -> int:
    settings = load_settings()
    with KnowledgeBase.open(settings) as kb:
        for layer, records in (("kern", KERN), ("erweitert", ERWEITERT)):
            kb.upsert(
                layer,
                [t for t, _ in records.values()],
                ids=list(records),
                metadatas=[m for _, m in records.values()],
            )
        questions = sys.argv[1:] or [
            "Wie hoch ist die Crimphöhe bei 0,35 mm²?",
            "Welche Einstufung gibt es im VDA 6.3 Audit?",
        ]
        reader = Principal("quickstart", clearance=2)
        for question in questions:
            print(f"\n? {question}  (clearance L2)")
            for hit in kb.query(question, n_results=3, principal=reader).hits:
                meta = hit.metadata
                print(
                    f"  {hit.rank}. [{hit.layer}] {hit.score:.3f}  {meta.get('source')}  "
                    f"L{meta['access_level']}\n     {hit.text[:110] if hit.text else ''}…"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
