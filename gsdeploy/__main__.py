from gsdeploy.cli import main

main()
