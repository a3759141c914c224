from tidings.entry import main

main()
