"""What the checks send: data derived from its sender and number, compared whole on arrival.

Event #n from the node named N carries :func:`numbered` ``(N, n)``: a string with non-ASCII
text, an int beyond 32 bits, a negative, a float, booleans, ``None``, a list and a nested map.
A receiver recomputes it from the sender and the number and compares everything it got, so
a transport that changes any byte of ``data`` (not only the fields the checks count by) fails.
Every value survives a round trip through each built-in codec unchanged.
"""

from __future__ import annotations

from typing import Any


def numbered(node: str, n: int) -> dict[str, Any]:
    """The data of event #``n`` from the node named ``node``."""
    return {
        "node": node,
        "n": n,
        "text": f"{node}#{n} naïve café ✓",
        "half": n / 2,
        "big": 2**40 + n,
        "negative": -n,
        "flags": [n % 2 == 0, None],
        "nested": {"node": node, "list": [n, str(n)]},
    }


def fence(node: str) -> dict[str, Any]:
    """The closing marker of the node named ``node``: "everything I sent before this is out"."""
    return {"node": node, "fence": True}


def corruption(data: Any, sender: str) -> str | None:
    """How ``data`` that claims to be :func:`numbered` or :func:`fence` traffic from ``sender``
    differs from what ``sender`` sent; None when it is intact (or not such traffic)."""
    if type(data) is not dict:
        return None
    n = data.get("n")
    if type(n) is int:
        return difference(numbered(sender, n), data)
    if data.get("fence") is True:
        return difference(fence(sender), data)
    return None


def difference(sent: Any, got: Any, where: str = "data") -> str | None:
    """The first place where ``got`` differs from ``sent``, described; None if they are equal."""
    if type(sent) is dict and type(got) is dict:
        for key in sent.keys() - got.keys():
            return f"{where}[{key!r}] is missing (sent {sent[key]!r})"
        for key in got.keys() - sent.keys():
            return f"{where}[{key!r}] = {got[key]!r} was never sent"
        for key, value in sent.items():
            found = difference(value, got[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if type(sent) is list and type(got) is list and len(sent) == len(got):
        for index, (a, b) in enumerate(zip(sent, got, strict=True)):
            found = difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if type(sent) is not type(got) or sent != got:
        return f"{where} is {got!r} ({type(got).__name__}); sent {sent!r} ({type(sent).__name__})"
    return None


__all__ = ["corruption", "difference", "fence", "numbered"]
