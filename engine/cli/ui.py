"""`engine ui`: serve the Savepoints page over the store (engine.ui; the extra
savepoint-engine[ui] brings what it needs)."""
import os

from engine.cli.commands import CommandError, open_engine

UI_PACKAGES = ("starlette", "uvicorn", "jinja2")


def cmd_ui(args):
    try:
        from engine.ui.server import serve
    except ImportError as e:
        if (e.name or "").split(".")[0] not in UI_PACKAGES:
            raise
        raise CommandError(f"engine ui needs the ui extra, which is not installed (no "
                           f"{e.name}): pip install 'savepoint-engine[ui]'") from None
    token = args.token if args.token is not None else os.environ.get("ENGINE_UI_TOKEN")
    with open_engine(args) as eng:
        try:
            serve(eng, args.host, args.port, token,
                  announce=lambda text: print(text, flush=True))
        except ValueError as e:
            raise CommandError(str(e)) from None
    return 0
