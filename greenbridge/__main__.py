"""Entry point of ``python -m greenbridge`` and the ``greenbridge`` command."""


def run():
    # Monkey-patching happens once, here, before anything else is imported.
    from gevent import monkey

    monkey.patch_all()

    from greenbridge.cli import main

    main()


if __name__ == "__main__":
    run()
