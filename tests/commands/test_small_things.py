"""Small things: the seeded owner can enforce at once, `totp-code`, `--version`."""

from __future__ import annotations

from click.testing import CliRunner

from commands.cli import main
from require2fa import totp


def test_seeded_owner_gets_a_totp_factor_and_can_enforce_dry_run(database, pool) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database, "ENVIRONMENT": "development"}
    seeded = runner.invoke(
        main,
        ["seed", "--org", "big", "--members", "50", "--owner-email", "boss@example.com"],
        env=env,
        catch_exceptions=False,
    )
    assert seeded.exit_code == 0, seeded.output
    line = next(line for line in seeded.output.splitlines() if "has a TOTP factor now" in line)
    secret = line.split("with the secret ", 1)[1].split(" ", 1)[0]
    command = seeded.output.splitlines()[-1].strip()
    assert command == f"require2fa totp-code {secret}"

    code = runner.invoke(main, ["totp-code", secret], catch_exceptions=False)
    assert code.exit_code == 0
    step = totp.current_step()
    assert code.output.strip() in {totp.code_at(secret, step + n) for n in (-1, 0, 1)}
    # The enforcement that naturally follows is not refused for the owner's lack of 2FA.
    dry = runner.invoke(
        main,
        ["enforce", "--org", "big", "--actor", "boss@example.com", "--dry-run"],
        env=env,
        catch_exceptions=False,
    )
    assert dry.exit_code == 0, dry.output
    # A second seed with the same owner (who has a factor now) adds none.
    again = runner.invoke(
        main,
        ["seed", "--org", "big2", "--members", "5", "--owner-email", "boss@example.com"],
        env=env,
        catch_exceptions=False,
    )
    assert again.exit_code == 0 and "TOTP factor now" not in again.output


def test_totp_code_refuses_what_is_not_a_secret() -> None:
    result = CliRunner().invoke(main, ["totp-code", "not base32!"])
    assert result.exit_code == 2 and result.output.startswith("error: not a base32 TOTP secret")
