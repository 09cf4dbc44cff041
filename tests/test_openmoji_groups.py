"""bench/openmoji_groups.py: each OpenMoji file lands in the sub-folder of its Unicode emoji group, whatever its
emoji presentation selectors, so that a class-conditional run (`data.label: label`) reads the groups it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "openmoji_groups.py"

EMOJI_TEST = """\
# group: Smileys & Emotion
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
# group: People & Body
1F44B                                                  ; fully-qualified     # 👋 E0.6 waving hand
1F44B 1F3FB                                            ; fully-qualified     # 👋🏻 E1.0 waving hand: light skin tone
# group: Symbols
0023 FE0F 20E3                                         ; fully-qualified     # #️⃣ E0.6 keycap: #
0023 20E3                                              ; unqualified         # #⃣ E0.6 keycap: #
# group: Flags
1F1E9 1F1EA                                            ; fully-qualified     # 🇩🇪 E0.6 flag: Germany
"""


def test_groups_follow_the_file_with_or_without_presentation_selectors(tmp_path):
    groups_mod = load_script(SCRIPT)
    (tmp_path / "emoji-test.txt").write_text(EMOJI_TEST, encoding="utf-8")
    groups = groups_mod.read_groups(tmp_path / "emoji-test.txt")
    assert groups_mod.group_of("1F600", groups) == "smileys-emotion"
    assert groups_mod.group_of("1F44B-1F3FB", groups) == "people-body"
    assert groups_mod.group_of("0023-FE0F-20E3", groups) == "symbols"
    assert groups_mod.group_of("1F1E9-1F1EA", groups) == "flags"
    assert groups_mod.group_of("E0A9", groups) == "extras"  # OpenMoji's own glyphs (private use)
    assert groups_mod.group_of("1F44B-1F3FF", groups) == "people-body"  # unlisted: its first code point's group
    assert groups_mod.group_of("1F9CC", groups) == "other"  # unlisted, and so is its first code point


def test_the_folder_holds_every_image_unchanged_under_its_group(tmp_path):
    (tmp_path / "emoji-test.txt").write_text(EMOJI_TEST, encoding="utf-8")
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    names = ["1F600", "1F44B", "1F44B-1F3FB", "1F1E9-1F1EA", "E0A9"]
    rows = ["path,name"]
    for i, name in enumerate(names):
        (raw / "images" / f"{name}.png").write_bytes(bytes([i]) * 10)
        rows.append(f"images/{name}.png,{name}")
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--raw", str(raw), "--out", str(out)]
    cmd += ["--emoji-test", str(tmp_path / "emoji-test.txt"), "--min-per-group", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    found = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}
    assert found == {
        "people-body/1F44B.png": bytes([1]) * 10,
        "people-body/1F44B-1F3FB.png": bytes([2]) * 10,
        "other/1F600.png": bytes([0]) * 10,  # groups under --min-per-group join `other`
        "other/1F1E9-1F1EA.png": bytes([3]) * 10,
        "other/E0A9.png": bytes([4]) * 10,
    }
    assert "| people-body | 2 |" in result.stdout and "| other | 3 |" in result.stdout
