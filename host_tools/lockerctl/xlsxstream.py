"""A streaming XLSX writer for exports of millions of rows: plain cells, no formatting.

Why our own (docs/benchmarks.md, "Host at scale"): XlsxWriter in its constant-memory mode, the
usual choice, spends 83 us of Python per row of the export's 13 cells (a method call, a type
check, a cell reference and an XML escape per cell, each written to a temporary file, which is
then deflated into the archive): 83 s for a million rows before the export reads anything, where
the goal is 30 s. Here a row is one piece of text built in one pass and written, with a thousand
others, straight into the deflating archive member: a few microseconds a row.

What it writes is the smallest workbook Excel, LibreOffice and openpyxl read: `[Content_Types]`,
the package and workbook relationships, `workbook.xml`, a minimal `styles.xml` and one
`sheetN.xml` per sheet. Text is always an inline string cell (`t="inlineStr"`), never a formula
and never a shared string (no table to hold in memory); characters XML cannot hold are the
caller's to replace (`display.xlsx_text`). Numbers are whole numbers. An empty text or None is
no cell at all (but for a blank cell closing a row whose last cells are empty). Sheets are
written one after the other: `add_sheet` closes the one before.
"""

from __future__ import annotations

import zipfile
from typing import IO

MAX_ROWS = 1_048_576  # a worksheet's rows (Excel's limit)
_FLUSH_ROWS = 1000

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    "{sheets}</Types>"
)
_SHEET_TYPE = (
    '<Override PartName="/xl/worksheets/sheet{n}.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
)
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    "<sheets>{sheets}</sheets></workbook>"
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    "{rels}"
    '<Relationship Id="rId{styles}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/styles" Target="styles.xml"/></Relationships>'
)
_SHEET_REL = (
    '<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet{n}.xml"/>'
)
_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    "<sheetData>"
)
_SHEET_TAIL = "</sheetData></worksheet>"
_KEEP = 'xml:space="preserve"'  # leading or trailing white space is part of the text


def column_name(c: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    name = ""
    c += 1
    while c:
        c, r = divmod(c - 1, 26)
        name = chr(65 + r) + name
    return name


_TEXTS_KEPT = 4096  # texts whose cells are kept (a workbook's recurring names, types...)


def _text_tail(v: str) -> str:
    """An inline string cell after its `r="A1` reference ('' for the empty text: no cell)."""
    if not v:
        return ""
    if "&" in v or "<" in v or ">" in v:
        v = escape(v)
    if v[0].isspace() or v[-1].isspace():
        return f'" t="inlineStr"><is><t {_KEEP}>{v}</t></is></c>'
    return f'" t="inlineStr"><is><t>{v}</t></is></c>'


def escape(text: str) -> str:
    """`text` as XML character data (the caller has replaced what XML cannot hold)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


class Workbook:
    """`Workbook(out)`: `add_sheet(name)`, then `row(cells)` for each row of that sheet (text,
    whole numbers or None), then `add_sheet` again or `close()`. `out` is a binary file, which
    need not be seekable."""

    def __init__(self, out: IO[bytes], compresslevel: int = 1):
        # Level 1: deflating the sheet's XML at level 6 took three times as long for a file
        # 15% smaller.
        self._zip = zipfile.ZipFile(
            out, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=compresslevel
        )
        # first, the parts that do not depend on the sheets
        self._zip.writestr("_rels/.rels", _ROOT_RELS)
        self._zip.writestr("xl/styles.xml", _STYLES)
        self._names: list[str] = []
        self._member: IO[bytes] | None = None
        self._buf: list[str] = []
        self._r = 0
        self._refs: list[str] = []
        self._texts: dict[str, str] = {}

    def add_sheet(self, name: str) -> None:
        if not 1 <= len(name) <= 31 or any(ch in name for ch in "[]:*?/\\"):
            raise ValueError(f"not a sheet name: {name!r}")
        self._end_sheet()
        self._names.append(name)
        self._member = self._zip.open(
            f"xl/worksheets/sheet{len(self._names)}.xml", "w", force_zip64=True
        )
        self._member.write(_SHEET_HEAD.encode())
        self._r = 0

    def row(self, cells) -> None:
        """Appends a row to the current sheet: str -> inline string, int -> number, None or ""
        -> no cell."""
        if self._member is None:
            raise ValueError("add_sheet first")
        if self._r >= MAX_ROWS:
            raise ValueError(f"a sheet holds {MAX_ROWS:,} rows")
        self._r += 1
        r = str(self._r)
        refs = self._refs
        if len(refs) < len(cells):
            refs.extend(column_name(c) for c in range(len(refs), len(cells)))
        out = ['<row r="', r, '">']
        add = out.append
        texts = self._texts
        for ref, v in zip(refs, cells, strict=False):
            if v.__class__ is str:
                # a text's cell after its reference, made once while the text recurs
                tail = texts.get(v)
                if tail is None:
                    tail = _text_tail(v)
                    if len(texts) >= _TEXTS_KEPT:
                        texts.clear()
                    texts[v] = tail
                if tail:
                    add(f'<c r="{ref}{r}{tail}')
            elif v is None:
                continue
            elif v.__class__ is int:
                add(f'<c r="{ref}{r}"><v>{v}</v></c>')
            else:
                raise TypeError(f"a cell holds text or a whole number, not {type(v).__name__}")
        last = cells[-1] if cells else 0
        if last is None or last == "":
            # A blank cell in the row's last column: a reader that sizes rows by their cells
            # (openpyxl's read-only mode without a `dimension`, which a stream cannot know
            # before its last row) still sees every row as wide as the header.
            add(f'<c r="{refs[len(cells) - 1]}{r}"/>')
        add("</row>")
        self._buf.append("".join(out))
        if len(self._buf) >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._buf and self._member is not None:
            self._member.write("".join(self._buf).encode("utf-8"))
        self._buf = []

    def _end_sheet(self) -> None:
        if self._member is None:
            return
        self._flush()
        self._member.write(_SHEET_TAIL.encode())
        self._member.close()
        self._member = None

    def close(self) -> None:
        """Ends the last sheet and writes the workbook's other parts."""
        if not self._names:
            self.add_sheet("Sheet1")
        self._end_sheet()
        n = len(self._names)
        z = self._zip
        z.writestr(
            "[Content_Types].xml",
            _CONTENT_TYPES.format(
                sheets="".join(_SHEET_TYPE.format(n=i) for i in range(1, n + 1))
            ),
        )
        sheets = "".join(
            f'<sheet name="{escape(name)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, name in enumerate(self._names, 1)
        )
        z.writestr("xl/workbook.xml", _WORKBOOK.format(sheets=sheets))
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            _WORKBOOK_RELS.format(
                rels="".join(_SHEET_REL.format(n=i) for i in range(1, n + 1)), styles=n + 1
            ),
        )
        z.close()
