from dglm_cli.cli import main

main()
