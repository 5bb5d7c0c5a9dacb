from wxnet.cli.main import main

main()
