from protheon.cli import main

raise SystemExit(main())
