echo "[$LEAK]"
