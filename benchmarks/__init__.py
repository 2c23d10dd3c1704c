"""`make bench`: the platform measured beside its peers, one group at a time or all of them."""
