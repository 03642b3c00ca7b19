from backworks.cli import main

main()
