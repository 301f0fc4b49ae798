"""Global variables through DWARF, checked against gdb-multiarch's ``print``.

Small C programs with every kind of type are built with arm-none-eabi-gcc
(-O0 and -O2, DWARF 2 to 5, with and without -gstrict-dwarf); crashcart's
rendering of each global must be byte-for-byte what ``gdb -batch -ex
'print var'`` prints from the same ELF.  gdb reads a static ELF's writable
sections from the file (and NOBITS ones as zeros), so the memory image
given to crashcart holds the same bytes as "captured" regions.  The QEMU
test compares a live board's ``device_config`` and ``crash_record`` as
gdb reads them over the gdbstub with crashcart reading the same RAM
through :class:`collector.gdbremote.GdbRemote`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from elftools.elf.elffile import ELFFile

from collector.dwarf_types import find_global, find_global_type
from collector.elf import ElfImage
from collector.evidence import MemoryImage
from collector.variables import SymbolNamer, gdb_string, read_variable, render, value_of
from crashcart.errors import InputError

from .conftest import CONFIG_DIR

GCC = shutil.which("arm-none-eabi-gcc")
GDB = shutil.which("gdb-multiarch")
needs_tools = pytest.mark.skipif(GCC is None or GDB is None,
                                 reason="arm-none-eabi-gcc or gdb-multiarch missing")

SHF_WRITE = 0x1
SHF_ALLOC = 0x2

PROGRAM = r"""
#include <stdint.h>
#include <stdbool.h>

enum color { RED, GREEN = 5, BLUE = -3 };
enum flags { F_NONE = 0, F_A = 1, F_B = 2, F_C = 8 };
enum mode { M_IDLE = 1, M_RUN = 3 };           /* not a flag enum: 1 and 3 share a bit */
typedef enum color color_t;
typedef uint32_t word_t;
typedef void (*handler_t)(int);
typedef char text8_t[8];

struct point { int16_t x, y; };
struct bits {
    unsigned a : 3;
    signed b : 5;
    unsigned c : 12;
    bool d : 1;
    enum flags e : 4;
    uint8_t f : 7;
    int64_t g : 40;
    unsigned : 0;
    unsigned h : 9;
};
union number { uint32_t u; float f; uint8_t b[4]; struct point p; };

struct record {
    uint32_t magic;
    const char *label;
    char name[12];
    uint8_t bytes[20];
    struct point pts[3];
    int grid[2][3];
    char names[2][6];
    union number num;
    struct { uint16_t lo, hi; };
    union { int32_t i; uint32_t w; };
    struct bits bits;
    color_t color;
    enum color unknown_color;
    enum flags fl, fl_unknown, fl_zero, fl_one_unknown;
    enum mode md, md_unknown;
    bool ok, notok;
    char ch, quote, bslash, nl; signed char sc; unsigned char uc; int8_t i8;
    float f; double d; float fneg; double dinf; float fnan;
    int64_t big; uint64_t ubig;
    volatile word_t vw;
    const int ci;
    int *p_int; void *p_void; struct record *self; const struct point *p_mid;
    handler_t handler; void (*raw_handler)(int, int);
    int *p_null; int *p_past;
    text8_t tag;
};

int counter = 7;
int table[40] = {1, 2, 3};
uint16_t zeros[64];
uint8_t ramp[300];
int32_t mixed[30] = {[0 ... 14] = -1, [15] = 7, [16 ... 29] = 2};
void on_event(int x) { counter += x; }
void on_pair(int a, int b) { counter += a * b; }
int32_t spacer = 12;
const char greeting[] = "hello\tworld\n\"q\"\\ \001\177\200\377 end";
char longtext[260];
char padded[16] = "abc";
char full[4] = {'w', 'x', 'y', 'z'};
char nul_run[24] = "ab\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0cd";

struct record rec = {
    .magic = 0x48535243u, .label = "label text", .name = "sensor",
    .bytes = {1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 10},
    .pts = {{1, -2}, {3, 4}, {-5, 6}}, .grid = {{1, 2, 3}, {4, 5, 6}},
    .names = {"ab", "cdefg"}, .num = {.u = 0x3fc00000u}, .lo = 0x1234, .hi = 0xfedc,
    .i = -77,
    .bits = {.a = 5, .b = -9, .c = 4000, .d = true, .e = F_C, .f = 99,
             .g = -123456789012LL, .h = 300},
    .color = BLUE, .unknown_color = (enum color)42,
    .fl = F_A | F_C, .fl_unknown = (enum flags)(F_B | 0x30), .fl_zero = F_NONE,
    .fl_one_unknown = (enum flags)0x40, .md = M_RUN, .md_unknown = (enum mode)2,
    .ok = true, .notok = false,
    .ch = 'Q', .quote = '\'', .bslash = '\\', .nl = '\n', .sc = -1, .uc = 200, .i8 = -128,
    .f = 3.14159274f, .d = 2.718281828459045, .fneg = -0.1f, .dinf = 1.0 / 0.0,
    .fnan = __builtin_nanf(""),
    .big = -9000000000000000000LL, .ubig = 18000000000000000000ULL,
    .vw = 0xdeadbeef, .ci = -5,
    .p_int = &table[3], .p_void = &counter, .self = &rec, .p_mid = &rec.pts[1],
    .handler = on_event, .raw_handler = on_pair, .p_null = 0, .p_past = &spacer + 1,
    .tag = "tag",
};
const struct record crec = { .magic = 1, .label = greeting, .name = "flash", .md = M_IDLE };
struct point *const cp = &rec.pts[1];
int *ptr = &table[5];
handler_t hp = on_event;
float fl = 3.14159f;
double db = 0.1;
bool flag = true;
char letter = 'Q';
color_t col = BLUE;
enum color badcol = (enum color)42;
enum flags fmix = (enum flags)(F_A | F_C | 16);
uint8_t cube[2][3][2] = {{{1, 2}, {3, 4}, {5, 6}}, {{7, 8}, {9, 10}, {11, 12}}};
int bss_var;
static int file_static = 99;
struct bits bitsvar = {.a = 7, .b = 15, .c = 1, .d = false, .e = F_B, .f = 127, .g = 1, .h = 511};
const char *strp = "pointer text";
const char *const *strpp = &strp;
unsigned char *ucp = ramp + 2;
struct point pointpair[2] = {{7, 7}, {7, 7}};
struct point samepoints[12];

void Reset_Handler(void)
{
    for (int i = 0; i < 300; i++)
        ramp[i] = (uint8_t)i;
    for (int i = 0; i < 259; i++)
        longtext[i] = (char)('a' + i % 26);
    file_static += bss_var;
    rec.handler(file_static);
    for (;;) { }
}
"""

VARIABLES = [
    "counter", "table", "zeros", "ramp", "mixed", "greeting", "longtext", "padded", "full",
    "nul_run", "rec", "crec", "cp", "ptr", "hp", "fl", "db", "flag", "letter", "col", "badcol",
    "fmix", "cube", "bss_var", "file_static", "bitsvar", "strp", "strpp", "ucp", "pointpair",
    "samepoints", "rec.bits", "rec.pts", "rec.num", "rec.grid", "rec.names", "rec.label",
    "rec.handler", "rec.raw_handler", "rec.self", "rec.p_mid", "rec.p_past", "rec.tag",
    "rec.fnan", "rec.dinf", "rec.fneg",
]

VARIANTS = {
    "O0-dwarf4": ["-O0", "-gdwarf-4"],
    "O2-dwarf4": ["-O2", "-gdwarf-4"],
    "O0-dwarf5": ["-O0", "-gdwarf-5"],
    "O2-dwarf5": ["-O2", "-gdwarf-5"],
    "O0-dwarf2-strict": ["-O0", "-gdwarf-2", "-gstrict-dwarf"],
    "O2-dwarf3-strict": ["-O2", "-gdwarf-3", "-gstrict-dwarf"],
    "O0-dwarf4-strict": ["-O0", "-gdwarf-4", "-gstrict-dwarf"],
}


def build(src_dir: Path, name: str, flags: list[str], *, extra: tuple[str, ...] = ()) -> Path:
    src = src_dir / "vars.c"
    if not src.exists():
        src.write_text(PROGRAM)
    elf = src_dir / f"{name}.elf"
    subprocess.run([GCC, "-mcpu=cortex-m3", "-mthumb", "-g", *flags, *extra, "-nostdlib",
                    "-nostartfiles", "-Wl,-e,Reset_Handler", "-Wl,--build-id=sha1",
                    "-Wl,--no-warn-rwx-segments", "vars.c", "-o", elf.name],
                   cwd=src_dir, check=True, capture_output=True)
    return elf


@pytest.fixture(scope="module")
def elfs(tmp_path_factory) -> dict[str, Path]:
    if GCC is None or GDB is None:
        pytest.skip("arm-none-eabi-gcc or gdb-multiarch missing")
    src = tmp_path_factory.mktemp("variables-src")
    return {name: build(src, name, flags) for name, flags in VARIANTS.items()}


def gdb_print(elf: Path, expressions: list[str]) -> dict[str, str]:
    """``print expr`` for each expression, what follows ``$N = ``."""
    args = [GDB, "-nx", "-batch"]
    for expr in expressions:
        args += ["-ex", f"print {expr}"]
    done = subprocess.run(args + [str(elf)], capture_output=True, timeout=120, check=True,
                          env={**os.environ, "LC_ALL": "C", "LANG": "C"})
    out = done.stdout.decode("latin-1").splitlines()
    values = [line.split(" = ", 1)[1] for line in out if re.match(r"^\$\d+ = ", line)]
    assert len(values) == len(expressions), done.stdout + done.stderr
    return dict(zip(expressions, values))


def static_memory(image: ElfImage) -> MemoryImage:
    """What gdb sees in a static ELF: writable sections' file bytes, NOBITS as zeros."""
    memory = MemoryImage(elf=image)
    for sec in image.elf.iter_sections():
        flags = sec["sh_flags"]
        if flags & SHF_ALLOC and flags & SHF_WRITE and sec["sh_size"]:
            data = bytes(sec["sh_size"]) if sec["sh_type"] == "SHT_NOBITS" else sec.data()
            memory.add(sec["sh_addr"], data, sec.name)
    return memory


def crashcart_print(image: ElfImage, memory: MemoryImage, expr: str) -> str:
    """crashcart's rendering of ``var`` or ``var.member`` (members as gdb shows them alone)."""
    name, *path = expr.split(".")
    value = read_variable(image, memory, name)
    for part in path:
        value = next(m for m in value.members if m.name == part)
    return render(value)


# -- against gdb -------------------------------------------------------------------


@pytest.mark.toolchain
@needs_tools
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_global_prints_as_gdb_prints_it(elfs, variant):
    elf = elfs[variant]
    image = ElfImage(elf)
    memory = static_memory(image)
    expected = gdb_print(elf, VARIABLES)
    mismatches = {}
    for expr in VARIABLES:
        if expr.startswith("rec.") and expr.split(".")[1] in ("label", "handler",
                                                               "raw_handler", "self",
                                                               "p_mid", "p_past"):
            # gdb prints a member alone with its type prefix like a top-level pointer.
            name, member = expr.split(".")
            value = next(m for m in read_variable(image, memory, name).members
                         if m.name == member)
            from dataclasses import replace
            got = render(replace(value, top_type_prefix=True))
        else:
            got = crashcart_print(image, memory, expr)
        if got != expected[expr]:
            mismatches[expr] = (got, expected[expr])
    assert not mismatches, "\n".join(f"{k}:\n  crashcart {g}\n  gdb       {e}"
                                     for k, (g, e) in mismatches.items())


@pytest.mark.toolchain
@needs_tools
def test_the_fixture_firmware_globals_print_as_gdb_prints_them(elf_100, elf_101):
    names = ["fw_info", "config_defaults", "afe_board", "device_config", "crash_record",
             "active_config", "reset_cause"]
    for elf in (elf_100, elf_101):
        image = ElfImage(elf)
        memory = static_memory(image)
        expected = gdb_print(elf, names)
        for name in names:
            assert render(read_variable(image, memory, name)) == expected[name], name


@pytest.mark.toolchain
@needs_tools
def test_big_endian_bitfields_decode_like_gdb(tmp_path):
    """ElfImage takes little-endian ELFs only, so the type layer is driven directly."""
    elf = build(tmp_path, "be", ["-O0", "-gdwarf-4"], extra=("-mbig-endian",))
    elf3 = build(tmp_path, "be3", ["-O0", "-gdwarf-3", "-gstrict-dwarf"], extra=("-mbig-endian",))
    for path in (elf, elf3):
        with path.open("rb") as f:
            efile = ELFFile(f)
            assert not efile.little_endian
            source = SimpleNamespace(elf=efile, path=path)
            sections = [s for s in efile.iter_sections()
                        if s["sh_flags"] & SHF_ALLOC and s["sh_type"] != "SHT_NOBITS"]

            def fetch(address: int, size: int, sections=sections) -> bytes | None:
                for sec in sections:
                    if sec["sh_addr"] <= address and address + size <= sec["sh_addr"] + \
                            sec["sh_size"]:
                        off = address - sec["sh_addr"]
                        return sec.data()[off:off + size]
                return None

            namer = SymbolNamer.from_elf(source)
            expected = gdb_print(path, ["bitsvar", "rec.bits", "rec.num", "rec.magic",
                                        "rec.big", "rec.fneg"])
            for expr in ("bitsvar", "rec"):
                var = find_global(source, expr)
                value = value_of(var.type, expr, var.address, fetch, namer=namer,
                                 little_endian=False)
                if expr == "bitsvar":
                    assert render(value) == expected["bitsvar"]
                else:
                    for member in ("bits", "num", "magic", "big", "fneg"):
                        got = next(m for m in value.members if m.name == member)
                        assert render(got) == expected[f"rec.{member}"], member


# -- structure, JSON and missing memory ---------------------------------------------------


@pytest.mark.toolchain
@needs_tools
def test_json_carries_types_values_addresses_and_members(elfs):
    image = ElfImage(elfs["O0-dwarf5"])
    value = read_variable(image, static_memory(image), "rec")
    doc = json.loads(json.dumps(value.to_json()))
    assert doc["type"] == "struct record" and doc["kind"] == "struct"
    assert doc["address"] == f"0x{image.symbol('rec').address:08x}"
    by_name = {m["name"]: m for m in doc["members"]}
    assert by_name["magic"] == {"name": "magic", "type": "uint32_t", "kind": "int",
                                "address": doc["address"], "size": 4, "value": 0x48535243,
                                "text": "1213420099"}
    assert by_name["color"]["value"] == -3 and by_name["color"]["enumerator"] == "BLUE"
    assert by_name["color"]["type"] == "color_t"
    assert by_name["unknown_color"]["value"] == 42 and "enumerator" not in by_name["unknown_color"]
    assert by_name["name"]["string"] == "sensor" and by_name["name"]["length"] == 12
    assert by_name["self"]["symbol"] == "rec" and by_name["self"]["type"] == "struct record *"
    assert by_name["p_mid"]["symbol"].startswith("rec+")
    assert by_name["handler"]["symbol"] == "on_event" and by_name["handler"]["type"] == "handler_t"
    assert by_name["raw_handler"]["type"] == "void (*)(int, int)"
    assert by_name["vw"]["type"] == "volatile word_t" and by_name["ci"]["type"] == "const int"
    assert by_name["fnan"]["value"] == "nan"  # JSON has no NaN
    bits = {m["name"]: m for m in by_name["bits"]["members"]}
    assert bits["b"]["value"] == -9 and bits["b"]["bit_size"] == 5
    assert bits["g"]["value"] == -123456789012 and bits["e"]["enumerator"] == "F_C"
    assert bits["d"]["value"] is True
    anonymous = [m for m in doc["members"] if m["name"] == ""]
    assert [sorted(x["name"] for x in m["members"]) for m in anonymous] == [["hi", "lo"],
                                                                           ["i", "w"]]
    union = {m["name"]: m for m in by_name["num"]["members"]}
    assert union["u"]["value"] == 0x3FC00000 and union["f"]["value"] == 1.5
    grid = by_name["grid"]
    assert grid["type"] == "int [2][3]" and grid["members"][1]["type"] == "int [3]"
    assert grid["members"][1]["members"][2]["value"] == 6


@pytest.mark.toolchain
@needs_tools
def test_repeats_and_truncation_are_explicit_in_json(elfs):
    image = ElfImage(elfs["O2-dwarf5"])
    memory = static_memory(image)
    zeros = read_variable(image, memory, "zeros").to_json()
    assert zeros["members"] == [{"name": "[0]", "type": "uint16_t", "kind": "int",
                                 "address": zeros["address"], "size": 2, "value": 0,
                                 "index": 0, "repeats": 64, "text": "0"}]
    # ramp is filled at run time: "capture" it as the firmware leaves it.
    memory.add(image.symbol("ramp").address, bytes(i & 0xFF for i in range(300)), "ramp")
    ramp = read_variable(image, memory, "ramp", max_elements=50)
    doc = ramp.to_json()
    assert doc["truncated"] is True and len(doc["members"]) == 50 and doc["length"] == 300
    assert doc["members"][49] == {"name": "[49]", "type": "uint8_t", "kind": "char",
                                  "address": f"0x{image.symbol('ramp').address + 49:08x}",
                                  "size": 1, "value": 49, "index": 49, "text": "49 '1'"}
    full = render(read_variable(image, memory, "ramp"))
    assert full.startswith(r'"\000\001\002') and full.endswith('"...')


@pytest.mark.toolchain
@needs_tools
def test_missing_memory_is_reported_per_field(elfs):
    image = ElfImage(elfs["O0-dwarf4"])
    rec = image.symbol("rec")
    full = static_memory(image)
    # Only the first 16 bytes of rec were captured; nothing else of RAM.
    memory = MemoryImage(elf=image)
    memory.add(rec.address, full.read(rec.address, 16), "partial")
    value = read_variable(image, memory, "rec")
    by_name = {m.name: m for m in value.members}
    assert by_name["magic"].value == 0x48535243 and by_name["magic"].missing is None
    assert by_name["label"].missing is None  # offset 4
    assert by_name["name"].missing is None   # offsets 8..19 straddle the end: per element
    assert by_name["name"].members[7].missing is None
    assert by_name["name"].members[8].missing is not None
    assert "was not captured" in by_name["bytes"].missing
    assert by_name["color"].missing is not None and by_name["color"].value is None
    text = render(value)
    assert text.startswith("{magic = 1213420099, label = 0x")
    assert "bytes = <not captured>" in text and "color = <not captured>" in text
    doc = value.to_json()
    assert {m["name"]: m for m in doc["members"]}["color"]["missing"].startswith("memory 0x")
    # The read-only copy in flash is read from the ELF.
    assert read_variable(image, memory, "crec").members[0].value == 1


@pytest.mark.toolchain
@needs_tools
def test_bad_names_and_debugless_elfs_give_input_errors(elfs, tmp_path):
    image = ElfImage(elfs["O0-dwarf5"])
    memory = static_memory(image)
    with pytest.raises(InputError, match="no global variable 'nope'"):
        read_variable(image, memory, "nope")
    objcopy = shutil.which("arm-none-eabi-objcopy")
    assert objcopy is not None
    stripped = tmp_path / "nodebug.elf"
    subprocess.run([objcopy, "--strip-debug", str(elfs["O0-dwarf5"]), str(stripped)], check=True)
    bare = ElfImage(stripped)
    with pytest.raises(InputError, match="no DWARF") as err:
        read_variable(bare, MemoryImage(elf=bare), "rec")
    assert err.value.remedy and err.value.path == str(stripped)


@pytest.mark.toolchain
@needs_tools
def test_encoder_view_is_unchanged_by_the_printing_view(elfs):
    """find_global_type (used by config encoding) still looks through typedefs."""
    image = ElfImage(elfs["O2-dwarf4"])
    stripped = find_global_type(image, "rec")
    kept = find_global(image, "rec").type
    assert stripped.name == "struct record" and kept.c_name == "struct record"
    vw = next(m for m in stripped.members if m.name == "vw")
    assert type(vw.type).__name__ == "BaseType"
    assert type(next(m for m in kept.members if m.name == "vw").type).__name__ == "QualifiedType"


def test_gdb_string_rules():
    assert gdb_string(b"abc\0", terminated=True) == '"abc"'
    assert gdb_string(b"abc\0\0", terminated=True) == '"abc\\000"'
    assert gdb_string(b"\0" * 20, terminated=True) == "'\\000' <repeats 19 times>"
    assert gdb_string(b"ab" + b"x" * 11 + b"cd", terminated=True) == \
        "\"ab\", 'x' <repeats 11 times>, \"cd\""
    assert gdb_string(b"a" * 300, terminated=True) == "'a' <repeats 300 times>"
    assert gdb_string(bytes(range(97, 123)) * 10, terminated=True).endswith('"...')
    assert gdb_string(b'"\\\x7f', terminated=False) == '"\\"\\\\\\177"'


# -- a live board: gdb over the gdbstub vs crashcart over GdbRemote ------------------------------


@pytest.mark.qemu
def test_live_board_variables_match_gdb(target, elf_100):
    from collector.device_config import load_config_file
    from collector.gdbremote import GdbRemote
    from replay.sim import SimulatedBoard

    if GDB is None:
        pytest.skip("gdb-multiarch missing")
    image = ElfImage(elf_100)
    ram_start = image.symbol("__ram_start").address
    ram_end = image.symbol("__noinit_end").address
    config = load_config_file(CONFIG_DIR / "bad-adc-channel.yaml")
    with SimulatedBoard(target, elf_100, config=config, gdb=True,
                        time_limit_ns=3_600_000_000_000) as board:
        board.resume()
        deadline = time.monotonic() + 20
        # The handler fills the crash record, prints the log and requests a
        # reset, which the simulated board turns into a pause: RAM stays as
        # the crash left it.
        assert board.qmp is not None
        while b"*** CRASH END ***" not in board.transcript or \
                board.qmp.command("query-status")["status"] == "running":
            assert time.monotonic() < deadline, board.transcript.decode("latin-1")
            time.sleep(0.02)
        with GdbRemote(*board.gdb_address) as gdb:
            ram = gdb.read_memory(ram_start, ram_end - ram_start)
            gdb.detach()
        memory = MemoryImage(elf=image)
        memory.add(ram_start, ram, "ram (gdbstub)")
        ours = {name: render(read_variable(image, memory, name))
                for name in ("device_config", "crash_record", "fw_info")}
        port = board.gdb_address[1]
        done = subprocess.run([GDB, "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{port}",
                               "-ex", "print device_config", "-ex", "print crash_record",
                               "-ex", "print fw_info", "-ex", "detach", str(elf_100)],
                              capture_output=True, timeout=60, check=True,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"})
    lines = [line.split(" = ", 1)[1] for line in done.stdout.decode("latin-1").splitlines()
             if re.match(r"^\$\d+ = ", line)]
    theirs = dict(zip(("device_config", "crash_record", "fw_info"), lines))
    assert "reason = 3" in ours["crash_record"]  # BUSFAULT
    assert "adc_channel = 6 '\\006'" in ours["device_config"]
    assert ours == theirs


@pytest.mark.toolchain
@needs_tools
def test_the_variants_cover_both_bitfield_encodings(elfs):
    """DWARF 5 uses DW_AT_data_bit_offset, the others DWARF 2's DW_AT_bit_offset."""
    def forms(path: Path) -> set[str]:
        found = set()
        with path.open("rb") as f:
            for cu in ELFFile(f).get_dwarf_info().iter_CUs():
                for die in cu.iter_DIEs():
                    found.update(a for a in die.attributes
                                 if a in ("DW_AT_data_bit_offset", "DW_AT_bit_offset"))
        return found

    assert forms(elfs["O2-dwarf5"]) == {"DW_AT_data_bit_offset"}
    assert forms(elfs["O0-dwarf2-strict"]) == {"DW_AT_bit_offset"}
    assert forms(elfs["O2-dwarf4"]) == {"DW_AT_bit_offset"}


def test_nested_arrays_stop_at_the_value_budget():
    from collector.dwarf_types import ArrayType, BaseType

    u8 = BaseType("uint8_t", 1, "unsigned", c_name="uint8_t")
    inner = ArrayType("uint8_t[100]", 100, u8, 100, c_name="uint8_t [100]")
    middle = ArrayType("uint8_t[100][100]", 10_000, inner, 100, c_name="uint8_t [100][100]")
    outer = ArrayType("x", 1_000_000, middle, 100, c_name="uint8_t [100][100][100]")
    data = bytes(i * 7 & 0xFF for i in range(1_000_000))
    value = value_of(outer, "cube", 0x20000000, lambda a, n: data[a - 0x20000000:
                                                                  a - 0x20000000 + n])
    def count(v) -> int:
        return len(v.members) + sum(count(m) for m in v.members if m.kind == "array")

    assert 99_000 < count(value) <= 100_100
    assert value.truncated or any(m.truncated for m in value.members)
    assert render(value).endswith("...}")


def test_byte_arrays_that_are_not_text_keep_every_byte():
    """A build ID in a uint8_t array is bytes (hex in JSON), not a latin-1 string cut at NUL."""
    from collector.debug_capture import _jsonable
    from collector.dwarf_types import ArrayType, BaseType, decode, encode

    uchar = BaseType("unsigned char", 1, "unsigned_char")
    arr = ArrayType("unsigned char[8]", 8, uchar, 8)
    build_id = bytes.fromhex("bfab0002d3b0ab00")
    assert decode(arr, build_id) == build_id
    assert _jsonable({"build_id": decode(arr, build_id)}) == {"build_id": "bfab0002d3b0ab00"}
    assert encode(arr, build_id) == build_id
    # text stays text: NUL-terminated, NUL-padded
    assert decode(arr, b"v1.0\0\0\0\0") == "v1.0"
    assert encode(arr, "v1.0") == b"v1.0\0\0\0\0"
    # text followed by stale bytes after the NUL is not a clean string: keep the bytes
    assert decode(arr, b"ab\0zzzzz") == b"ab\0zzzzz"
    with pytest.raises(InputError, match="the array holds 8"):
        encode(arr, bytes(9))
