"""Path health at the controller: each measured pair's forwarding path (``routes``),
the probe pairs of ``peers: auto`` (``select``), and the link at fault
(``localize``). Plain Python: no Ryu import, times passed in."""
