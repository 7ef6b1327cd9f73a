"""Console tools of vos_ros (each module has ``main(argv=None)``)."""
