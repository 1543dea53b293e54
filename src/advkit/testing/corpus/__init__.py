"""A corpus of hostile and ordinary model files, built by code (no binary file is committed).

``build_corpus(folder, marker)`` writes, under ``folder``, malicious model files in every format
advkit reads (pickle, joblib plain and compressed, ``torch.save`` zip and legacy, TorchScript,
safetensors, advkit folders, skops) and ordinary ones of each format, and returns one
:class:`CorpusEntry` per file. Every payload, if it ever ran, would only create (or write) the
``marker`` path and touch nothing else; the payloads are never run here. The corpus is what
``tests/models/test_corpus.py`` checks advkit against, and what ``benchmarks/compare_scanners.py``
runs other scanners on.

The techniques come from published deny-list bypasses and parser differentials of pickle
scanners: picklescan's advisories (GHSA-655q-fx9r-782v unsafe globals missed, CVE-2025-1716
``pip.main``, GHSA-v7x6-rv5q-mhwc ``timeit.timeit``, GHSA-xp4f-hrf8-rxw7 ``ensurepip._run_pip``,
GHSA-955r-x9j8-7rhh and GHSA-46h3-79wf-xr6c ``_operator``, GHSA-769v-p64c-89pr pickles under
non-standard names in torch archives, GHSA-w8jq-xcqf-f792 and GHSA-7q5r-7gvp-wc82 zip headers that
crash the scanner but not torch, GHSA-9gvj-pp9x-gcfr a parsing flaw, CVE-2025-10155 protocol 0/1
pickles without magic bytes), picklescan issue #14 and modelscan PR #54 (memo opcodes), modelscan
issue #263 (the same gaps in modelscan), fickling issue #190 (picklescan bypasses fickling lacked),
and the classic tricks of "Sour Pickles" (BUILD installing ``__setstate__``, copyreg extensions).

The pickle assembler (:class:`G`, :class:`Call`, :func:`enc`, :func:`invoke`), the zip forgers and
the hostile TorchScript modules are public so that tests can build variants of them. They live in
the package's modules, one per kind of file: ``pickles`` (the assembler and hostile pickles),
``joblib_cases``, ``archives`` (zip, tar, polyglots, formats hidden by a name), ``torchscript``,
``skops_folders`` and ``benign``; every public name is re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from advkit.testing.corpus._writer import CorpusEntry, _Writer
from advkit.testing.corpus.archives import _malicious_archives, patch_zip_member, torch_zip, zip_cases
from advkit.testing.corpus.benign import _benign
from advkit.testing.corpus.joblib_cases import _malicious_joblib, joblib_differentials
from advkit.testing.corpus.joblib_cases import joblib_wrapper as joblib_wrapper
from advkit.testing.corpus.pickles import (
    DT,
    Call,
    G,
    _malicious_pickles,
    enc,
    hostile_calls,
    invoke,
    npy_with_pickle,
    pickle_of,
)
from advkit.testing.corpus.pickles import FORMS as FORMS
from advkit.testing.corpus.skops_folders import _malicious_skops_and_folders
from advkit.testing.corpus.torchscript import (
    FromFileInForward,
    FromFileInHelper,
    FromFileInSetstate,
    SavesInForward,
    TorchScriptBase,
    _malicious_torchscript,
    code_edits,
    rewrite_archive,
)
from advkit.testing.corpus.torchscript import edit_code as edit_code

__all__ = [
    "DT", "Call", "CorpusEntry", "FromFileInForward", "FromFileInHelper", "FromFileInSetstate",
    "G", "SavesInForward", "TorchScriptBase", "build_corpus", "code_edits", "enc",
    "hostile_calls", "invoke", "joblib_differentials", "npy_with_pickle", "patch_zip_member",
    "pickle_of", "rewrite_archive", "torch_zip", "zip_cases",
]
# FORMATS, FORMS, edit_code and joblib_wrapper are public as well but were never in __all__; the
# last three are re-exported above with a redundant alias (the explicit re-export form).

FORMATS = ("pickle", "joblib", "torch-zip", "torch-legacy", "torchscript", "safetensors",
           "advkit", "skops")


def build_corpus(folder, marker) -> list[CorpusEntry]:
    """Write the corpus under ``folder`` (created if missing) and return its entries. Every payload
    would only create or write ``marker``, which must not exist inside ``folder``."""
    folder, marker = Path(folder), Path(marker)
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder)
    _malicious_pickles(w, marker)
    _malicious_joblib(w, marker)
    _malicious_archives(w, marker)
    _malicious_torchscript(w, marker)
    _malicious_skops_and_folders(w, marker)
    _benign(w)
    return w.entries
