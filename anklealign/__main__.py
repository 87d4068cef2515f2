from anklealign.cli import main

raise SystemExit(main())
