from anomtune.cli import main

main()
