from train.data.crowd_synth.cli import main

main()
