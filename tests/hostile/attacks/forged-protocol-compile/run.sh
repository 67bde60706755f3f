echo own
