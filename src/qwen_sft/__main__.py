from qwen_sft.cli import main

raise SystemExit(main())
