from walkcut.cli import main

raise SystemExit(main())
