from walkcut.runtime.cli import main

raise SystemExit(main())
