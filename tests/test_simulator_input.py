"""The simulator refuses input it would otherwise ignore: a key that is no key, a setting twice."""

from __future__ import annotations

import pytest

from gptimage_async._cli import main
from gptimage_async._cli._args import parser
from gptimage_async.simulator import KeyConfig, Simulator, SimulatorConfig
from gptimage_async.simulator._options import config_from_options


@pytest.mark.parametrize("bad", [None, 42, b"sk-doomed", ["sk-doomed"]])
async def test_revoke_and_restore_refuse_a_key_that_is_not_a_str(bad: object) -> None:
    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        with pytest.raises(TypeError, match="str"):
            sim.revoke(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="str"):
            sim.restore(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", ["", "   "])
async def test_revoke_refuses_an_empty_key(empty: str) -> None:
    async with Simulator(SimulatorConfig(time_scale=0.01)) as sim:
        with pytest.raises(ValueError, match="non-empty"):
            sim.revoke(empty)


@pytest.mark.parametrize(
    "setting", ["credits=1,credits=2", "limit=2/1,limit=none", "price=8/20,price=9/21"]
)
def test_a_key_setting_given_twice_is_refused(
    setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--key", f"sk-a:{setting}"])
    assert exited.value.code == 2
    name = setting.partition("=")[0]
    assert f"{name} is given twice" in capsys.readouterr().err


def test_a_key_alone_is_a_known_key_with_the_defaults() -> None:
    config = config_from_options(
        parser().parse_args(["simulate", "--key", "sk-a", "--credits", "7"])
    )
    assert config.keys == {"sk-a": KeyConfig()}
    assert config.limits("sk-a").credits == 7 == config.limits("sk-other").credits
