from sysmetrics.cli import main

main()
