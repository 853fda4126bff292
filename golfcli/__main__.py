from golfcli.main import main

main()
