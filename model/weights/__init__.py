"""The official MiniGPT-v2 weights: download the three official files (`fetch`) and turn them into one Hugging Face
folder with strict key accounting and LoRA merged (`official`)."""
