"""`xlsxstream`, the export's own XLSX writer: what it writes is read back by openpyxl as written
(text exact, never a formula; numbers as numbers; every row as wide as its header), on several
sheets, to an output that cannot seek."""

import io

import pytest
from lockerctl import xlsxstream


class Pipe(io.RawIOBase):
    """A write-only binary stream without seek or tell (a pipe)."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += b
        return len(b)


def read_back(data: bytes, tmp_path, read_only: bool):
    from openpyxl import load_workbook

    path = tmp_path / "w.xlsx"
    path.write_bytes(bytes(data))
    return load_workbook(path, read_only=read_only)


@pytest.mark.parametrize("read_only", [True, False])
def test_cells_read_back_exactly(tmp_path, read_only):
    out = io.BytesIO()
    wb = xlsxstream.Workbook(out)
    wb.add_sheet("events")
    wb.row(["a", "b", "c", "d"])
    wb.row(["=1+1", "<b>&amp;</b>", -5, None])
    wb.row(["  lead", "trail  ", "", "x\ny"])
    wb.row([2**40, "@SUM(A1)", None, ""])
    wb.add_sheet("events 2")
    wb.row(["only"])
    wb.close()
    book = read_back(out.getvalue(), tmp_path, read_only)
    assert book.sheetnames == ["events", "events 2"]
    rows = list(book["events"].iter_rows(values_only=True))
    assert rows == [
        ("a", "b", "c", "d"),
        ("=1+1", "<b>&amp;</b>", -5, None),
        ("  lead", "trail  ", None, "x\ny"),
        (2**40, "@SUM(A1)", None, None),
    ]
    assert list(book["events 2"].iter_rows(values_only=True)) == [("only",)]
    if not read_only:
        cells = [c for row in book["events"].iter_rows() for c in row]
        assert not [c for c in cells if c.data_type == "f"]
        assert book["events"]["C2"].data_type == "n"


def test_a_pipe_is_enough(tmp_path):
    pipe = Pipe()
    wb = xlsxstream.Workbook(pipe)
    wb.add_sheet("s")
    for i in range(3000):  # past the writer's flush of a thousand rows
        wb.row([f"row {i}", i])
    wb.close()
    rows = list(read_back(pipe.data, tmp_path, True)["s"].iter_rows(values_only=True))
    assert len(rows) == 3000 and rows[-1] == ("row 2999", 2999)


def test_what_a_sheet_cannot_hold_is_refused():
    wb = xlsxstream.Workbook(io.BytesIO())
    with pytest.raises(ValueError):
        wb.row(["no sheet yet"])
    with pytest.raises(ValueError):
        wb.add_sheet("a/b")
    wb.add_sheet("ok")
    with pytest.raises(TypeError):
        wb.row([1.5])


def test_column_names():
    assert [xlsxstream.column_name(c) for c in (0, 12, 25, 26, 27, 701, 702)] == [
        "A", "M", "Z", "AA", "AB", "ZZ", "AAA",
    ]  # fmt: skip
