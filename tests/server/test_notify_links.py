"""The notifier's per-account links (one link bare, several in a tuple: issue 11): every link of
an account is told once, a link added twice counts once, and a link that goes away
while the notifier walks the account's links neither stops the walk nor is told again."""

from __future__ import annotations

from collections.abc import Sequence

from wxnet.server.notify import Item, Notifier


class Sub:
    def __init__(self, notifier: Notifier, uin: int, leave: bool = False) -> None:
        self.got: list[int] = []
        self.notifier, self.uin, self.leave = notifier, uin, leave

    def notify(self, selector: int, items: Sequence[Item] | None = None) -> None:
        self.got.append(selector)
        if self.leave:  # a link that closes as it is told (a full write buffer, say)
            self.notifier.remove(self.uin, self)


class Bus:
    def __init__(self) -> None:
        self.held: dict[int, int] = {}

    def hold(self, uin: int) -> None:
        self.held[uin] = self.held.get(uin, 0) + 1

    def release(self, uin: int) -> None:
        self.held[uin] -= 1

    def publish(self, news: dict[int, int]) -> None:
        pass


def test_each_link_of_an_account_is_told_once() -> None:
    n = Notifier()
    n.bus = bus = Bus()
    a, b, other = Sub(n, 1, leave=True), Sub(n, 1), Sub(n, 2)
    for s, uin in ((a, 1), (b, 1), (a, 1), (other, 2)):
        n.add(uin, s)
    assert n.links(1) == 2 and n.total_links == 3 and n.subscribers(1) == (a, b)
    assert bus.held == {1: 2, 2: 1}
    n.publish({1: 4})
    assert a.got == [4] and b.got == [4] and other.got == []
    assert n.subscribers(1) == (b,) and bus.held[1] == 1  # a left while being told
    n.publish({1: 8, 2: 1})
    assert a.got == [4] and b.got == [4, 8] and other.got == [1]
    n.remove(1, b)
    n.remove(1, b)  # not there any more: nothing happens
    assert n.links(1) == 0 and n.subscribers(1) == () and bus.held == {1: 0, 2: 1}
    assert n.total_links == 1


def test_one_link_is_held_bare_and_several_in_a_tuple() -> None:
    n = Notifier()
    a, b, c = Sub(n, 1), Sub(n, 1), Sub(n, 1)
    n.add(1, a)
    assert n._links[1] is a and n.subscribers(1) == (a,)  # no tuple for the usual case
    n.add(1, b)
    n.add(1, c)
    held = n._links[1]
    assert isinstance(held, tuple) and held == (a, b, c) and n.every_link() == [a, b, c]
    n.remove(1, b)
    assert n.subscribers(1) == (a, c) and isinstance(n._links[1], tuple)
    n.remove(1, a)
    assert n._links[1] is c and n.total_links == 1
    n.publish({1: 2})
    assert c.got == [2] and a.got == b.got == []
    n.remove(1, c)
    assert 1 not in n._links and n.every_link() == [] and n.total_links == 0
