"""The file and video content XML (wxnet.proto.mediaxml): golden strings, round trips,
the clients' own forms (itchat's single quotes, an unescaped name), and garbage that
parses to None without raising."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wxnet.proto import mediaxml
from wxnet.proto.mediaxml import FileInfo, VideoInfo


def test_golden_file_and_video() -> None:
    assert mediaxml.file_content("a&b.PDF", 12, "@wxfile_9") == (
        '<msg><appmsg appid="" sdkver="0"><title>a&amp;b.PDF</title><des></des><type>6</type>'
        "<appattach><totallen>12</totallen><attachid>@wxfile_9</attachid>"
        "<fileext>pdf</fileext></appattach></appmsg></msg>"
    )
    assert mediaxml.video_content(5012, 4) == '<msg><videomsg length="5012" playlength="4"/></msg>'
    assert mediaxml.parse_video(mediaxml.video_content(5012, 4)) == VideoInfo(5012, 4)


def test_the_clients_forms() -> None:
    itchat = (
        "<appmsg appid='wxeb7ec651dd0aefa9' sdkver=''><title>r.zip</title><des></des>"
        "<action></action><type>6</type><content></content><url></url><lowurl></lowurl>"
        "<appattach><totallen>70000</totallen><attachid>@m1</attachid>"
        "<fileext>zip</fileext></appattach><extinfo></extinfo></appmsg>"
    )
    assert mediaxml.parse_file(itchat) == FileInfo("r.zip", 70000, "@m1", 6)
    raw = itchat.replace("r.zip", "Tom & Jerry <1>.txt")  # pasted in unescaped
    assert mediaxml.parse_file(raw) == FileInfo("Tom & Jerry <1>.txt", 70000, "@m1", 6)
    link = itchat.replace("<type>6</type>", "<type>5</type>")
    assert mediaxml.parse_file(link) == FileInfo("r.zip", 70000, "@m1", 5)


#: What a file name or MediaId can hold (the server takes printable names only).
_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40).filter(
    lambda t: t == t.strip()
)


@given(_TEXT.filter(bool), st.integers(0, 2**40), _TEXT)
def test_file_round_trip(name: str, size: int, attach: str) -> None:
    got = mediaxml.parse_file(mediaxml.file_content(name, size, attach))
    assert got == FileInfo(name, size, attach, 6)


@given(st.text(max_size=300))
def test_garbage_parses_to_none_or_a_file(text: str) -> None:
    for parse in (mediaxml.parse_file, mediaxml.parse_video):
        parse(text)  # never raises
    assert mediaxml.parse_file("<!DOCTYPE x [<!ENTITY a 'b'>]><appmsg/>") is None
    assert mediaxml.parse_video("<msg><videomsg length='-1'/></msg>") is None
