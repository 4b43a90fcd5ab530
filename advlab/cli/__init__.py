"""The advlab command: argument parsing, configs from flags, listing, run directories, export."""
