"""Entry point of ``python -m greenbridge`` and the ``greenbridge`` command."""


def run():
    # Monkey-patching happens once, here, before anything else is imported.
    from gevent import monkey

    monkey.patch_all()
    # gevent records, for every greenlet it spawns, the stack and greenlet that spawned
    # it (for its debugging tools, which greenbridge does not use): some 1 KiB per idle
    # connection, and time on every spawn.
    import gevent

    gevent.config.track_greenlet_tree = False

    from greenbridge.cli import main

    main()


if __name__ == "__main__":
    run()
