from pointkd.cli import main

raise SystemExit(main())
