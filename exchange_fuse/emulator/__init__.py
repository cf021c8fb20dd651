"""A Microsoft Graph mail emulator served over real HTTPS on loopback.

It answers the token endpoint and OpenID discovery (so real MSAL obtains tokens), and the
Graph mail endpoints the product uses: folders, messages, attachments, ``$value``, delta,
moves and deletes, ``$batch``. Graph's quirks are on by default; limits and faults can be
switched at start (flags) and at run time (``/_emulator/faults``). Nothing else in the
package imports it: it is a separate program, the test bed and the engine of the demo.

Modules: ``cli``/``server`` (start-up), ``app`` (ASGI), ``auth`` (tokens), ``graph`` and
``delta`` (the API), ``odata`` and ``render`` (query options and JSON), ``store`` (mailboxes),
``mime``, ``load``, ``generate`` and ``demo`` (where mail comes from), ``faults`` and
``quirks`` (knobs), ``content`` and ``ids``.
"""
