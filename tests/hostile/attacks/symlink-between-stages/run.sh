echo own run.sh
