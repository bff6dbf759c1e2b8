from convnet_cli.main import main

main()
