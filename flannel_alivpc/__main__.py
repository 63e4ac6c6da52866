"""``python -m flannel_alivpc`` runs the command-line interface."""

from flannel_alivpc.cli import main

raise SystemExit(main())
