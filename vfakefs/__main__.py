from vfakefs.cli import main

raise SystemExit(main())
