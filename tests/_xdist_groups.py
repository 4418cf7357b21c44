"""``--dist loadgroup`` for pytest 9: keep an ``xdist_group``'s tests on one worker.

pytest-xdist 3.8 groups tests by renaming each marked item on the worker to
``<nodeid>@<group>`` (it sets ``item._nodeid``). pytest 9 keeps a node's id in
a structured ``NodeId`` (``item._id``) instead, so that rename is lost and the
controller spreads the group over every worker: the README's blocks, which build
on each other, each ran on a different worker that started its own simulator and
ran every earlier block again (about three times the work). This plugin makes
the same rename on the new attribute; it does nothing when xdist's own rename
took effect or the run is not ``--dist loadgroup``.
"""

from __future__ import annotations

import pytest


class LoadGroupIds:
    """Registered by ``tests/conftest.py``; runs on each xdist worker."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        # Set on xdist workers only (from `--dist loadgroup`).
        if not getattr(config.option, "loadgroup", False):
            return
        for item in items:
            groups = {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
            node_id = getattr(item, "_id", None)
            if not groups or "@" in item.nodeid or node_id is None:
                continue
            last = node_id.names[-1] + ("" if node_id.params is None else f"[{node_id.params}]")
            # The same "<nodeid>@<group>" string xdist's LoadGroupScheduling splits on.
            item._id = type(node_id)(
                path=node_id.path,
                names=(*node_id.names[:-1], f"{last}@{'_'.join(sorted(groups))}"),
            )
