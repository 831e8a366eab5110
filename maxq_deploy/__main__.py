from maxq_deploy.cli.app import main

main()
