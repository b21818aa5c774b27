from tunekeeper.cli import main

raise SystemExit(main())
