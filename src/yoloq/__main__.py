from yoloq.cli import main

raise SystemExit(main())
